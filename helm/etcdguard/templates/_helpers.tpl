{{/* Chart name. */}}
{{- define "etcdguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (63 chars max: a DNS label). */}}
{{- define "etcdguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "etcdguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels. */}}
{{- define "etcdguard.labels" -}}
helm.sh/chart: {{ include "etcdguard.chart" . }}
{{ include "etcdguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "etcdguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "etcdguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "etcdguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "etcdguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "etcdguard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "etcdguard.keysSecretName" -}}
{{- default (printf "%s-keys" (include "etcdguard.fullname" .)) .Values.keys.existingSecret }}
{{- end }}

{{/* Fail early on values that cannot work. */}}
{{- define "etcdguard.validate" -}}
{{- if not (has .Values.mode (list "cronjob" "serve")) }}
{{- fail (printf "mode must be cronjob or serve, not %q" .Values.mode) }}
{{- end }}
{{- if and .Values.verification.enabled (not .Values.verification.identitySecret.name) }}
{{- fail "verification.enabled needs verification.identitySecret.name (a Secret holding the age identity)" }}
{{- end }}
{{- if and .Values.keys.create .Values.keys.existingSecret }}
{{- fail "keys.create and keys.existingSecret are mutually exclusive" }}
{{- end }}
{{- if and .Values.keys.create (not .Values.keys.recipients) }}
{{- fail "keys.create needs keys.recipients (age1...)" }}
{{- end }}
{{- end }}

{{/*
etcdguard.yaml: the chart's paths (mounted certs and keys, process sandbox) under the user's
`config:` (the user's keys win), and hostStore over config.store.
*/}}
{{- define "etcdguard.config" -}}
{{- $base := dict }}
{{- if .Values.etcdCerts.enabled }}
{{- $dir := .Values.etcdCerts.mountPath }}
{{- $_ := set $base "etcd" (dict "cacert" (printf "%s/%s" $dir .Values.etcdCerts.caFile) "cert" (printf "%s/%s" $dir .Values.etcdCerts.certFile) "key" (printf "%s/%s" $dir .Values.etcdCerts.keyFile)) }}
{{- end }}
{{- $_ := set $base "encryption" (dict "recipients_file" (printf "/etc/etcdguard/keys/%s" .Values.keys.recipientsKey)) }}
{{- $_ = set $base "signing" (dict "key_file" (printf "/etc/etcdguard/keys/%s" .Values.keys.signingKeyKey)) }}
{{- $_ = set $base "verify" (dict "sandbox" "process") }}
{{- $cfg := mustMergeOverwrite $base (deepCopy (default (dict) .Values.config)) }}
{{- if .Values.hostStore.enabled }}
{{- $_ = set $cfg "store" (dict "type" "local" "path" .Values.hostStore.path) }}
{{- end }}
{{- if and (eq .Values.mode "serve") .Values.serve.emergencyStore.enabled }}
{{- $svc := default (dict) (get $cfg "service") }}
{{- $_ = set $svc "emergency_local_store" .Values.serve.emergencyStore.hostPath }}
{{- $_ = set $cfg "service" $svc }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Pod-level securityContext: runAsNonRoot follows runAsUser. */}}
{{- define "etcdguard.podSecurityContext" -}}
{{- $ctx := deepCopy (default (dict) .Values.podSecurityContext) }}
{{- $_ := set $ctx "runAsUser" (int .Values.runAsUser) }}
{{- $_ = set $ctx "runAsGroup" (int .Values.runAsGroup) }}
{{- $_ = set $ctx "runAsNonRoot" (ne (int .Values.runAsUser) 0) }}
{{- if and (ne (int .Values.runAsUser) 0) (not (hasKey $ctx "fsGroup")) }}
{{- $_ = set $ctx "fsGroup" (int .Values.runAsGroup) }}
{{- end }}
{{- toYaml $ctx }}
{{- end }}

{{/* Volumes shared by the CronJob and the Deployment. `identity`: mount the age identity. */}}
{{- define "etcdguard.volumes" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- name: config
  configMap:
    name: {{ include "etcdguard.fullname" $root }}-config
- name: keys
  secret:
    secretName: {{ include "etcdguard.keysSecretName" $root }}
    defaultMode: 0440
    items:
      - key: {{ $v.keys.recipientsKey }}
        path: {{ $v.keys.recipientsKey }}
      - key: {{ $v.keys.signingKeyKey }}
        path: {{ $v.keys.signingKeyKey }}
{{- if $v.etcdCerts.enabled }}
{{- if $v.etcdCerts.existingSecret }}
- name: etcd-certs
  secret:
    secretName: {{ $v.etcdCerts.existingSecret }}
    defaultMode: 0440
{{- else if $v.etcdCerts.mountDirectory }}
- name: etcd-certs
  hostPath:
    path: {{ $v.etcdCerts.hostPath }}
    type: Directory
{{- else }}
{{- range $i, $f := list $v.etcdCerts.caFile $v.etcdCerts.certFile $v.etcdCerts.keyFile }}
- name: etcd-cert-{{ $i }}
  hostPath:
    path: {{ printf "%s/%s" $v.etcdCerts.hostPath $f }}
    type: File
{{- end }}
{{- end }}
{{- end }}
{{- if .identity }}
- name: identity
  secret:
    secretName: {{ $v.verification.identitySecret.name }}
    defaultMode: 0440
    items:
      - key: {{ $v.verification.identitySecret.key }}
        path: identity.age
{{- end }}
{{- if $v.hostStore.enabled }}
- name: host-store
  hostPath:
    path: {{ $v.hostStore.path }}
    type: DirectoryOrCreate
{{- end }}
{{- if and (eq $v.mode "serve") $v.serve.emergencyStore.enabled }}
- name: emergency-store
  hostPath:
    path: {{ $v.serve.emergencyStore.hostPath }}
    type: DirectoryOrCreate
{{- end }}
- name: tmp
  {{- if $v.tmp.sizeLimit }}
  emptyDir:
    sizeLimit: {{ $v.tmp.sizeLimit }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volume mounts. `identity`: the age identity (the verify step, serve with verification);
     `etcd`: the etcd client certs (only the steps that talk to etcd). */}}
{{- define "etcdguard.volumeMounts" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- name: config
  mountPath: /etc/etcdguard/etcdguard.yaml
  subPath: etcdguard.yaml
  readOnly: true
- name: keys
  mountPath: /etc/etcdguard/keys
  readOnly: true
{{- if and .etcd $v.etcdCerts.enabled }}
{{- if or $v.etcdCerts.existingSecret $v.etcdCerts.mountDirectory }}
- name: etcd-certs
  mountPath: {{ $v.etcdCerts.mountPath }}
  readOnly: true
{{- else }}
{{- range $i, $f := list $v.etcdCerts.caFile $v.etcdCerts.certFile $v.etcdCerts.keyFile }}
- name: etcd-cert-{{ $i }}
  mountPath: {{ printf "%s/%s" $v.etcdCerts.mountPath $f }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}
{{- if .identity }}
- name: identity
  mountPath: /etc/etcdguard/identity
  readOnly: true
{{- end }}
{{- if $v.hostStore.enabled }}
- name: host-store
  mountPath: {{ $v.hostStore.path }}
{{- end }}
{{- if and (eq $v.mode "serve") $v.serve.emergencyStore.enabled }}
- name: emergency-store
  mountPath: {{ $v.serve.emergencyStore.hostPath }}
{{- end }}
- name: tmp
  mountPath: /tmp
{{- with $v.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment. `identity`: point etcdguard at the mounted age identity. */}}
{{- define "etcdguard.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- name: ETCDGUARD_CONFIG
  value: /etc/etcdguard/etcdguard.yaml
{{- if .identity }}
- name: ETCDGUARD_IDENTITY
  value: /etc/etcdguard/identity/identity.age
{{- end }}
{{- with $v.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.s3.secretAccessKeyKey }}
{{- if $v.s3.sessionTokenKey }}
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.s3.sessionTokenKey }}
{{- end }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod spec fields common to both modes. */}}
{{- define "etcdguard.podCommon" -}}
serviceAccountName: {{ include "etcdguard.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
hostNetwork: {{ .Values.hostNetwork }}
dnsPolicy: {{ default (ternary "ClusterFirstWithHostNet" "ClusterFirst" .Values.hostNetwork) .Values.dnsPolicy }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "etcdguard.podSecurityContext" . | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* One etcdguard container: dict root, name, args, identity, etcd. */}}
{{- define "etcdguard.container" -}}
{{- $v := .root.Values -}}
- name: {{ .name }}
  image: {{ include "etcdguard.image" .root }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  command: ["etcdguard"]
  args:
    {{- toYaml .args | nindent 4 }}
  env:
    {{- include "etcdguard.env" . | nindent 4 }}
  volumeMounts:
    {{- include "etcdguard.volumeMounts" . | nindent 4 }}
  securityContext:
    {{- toYaml $v.containerSecurityContext | nindent 4 }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
