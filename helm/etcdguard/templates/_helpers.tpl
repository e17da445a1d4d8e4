{{/* Chart name. */}}
{{- define "etcdguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (52 chars max: CronJob names leave room for the Job suffix). */}}
{{- define "etcdguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The verification CronJob's name. */}}
{{- define "etcdguard.verifyName" -}}
{{- printf "%s-verify" (include "etcdguard.fullname" . | trunc 45 | trimSuffix "-") }}
{{- end }}

{{- define "etcdguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels. */}}
{{- define "etcdguard.labels" -}}
{{ include "etcdguard.componentLabels" (dict "root" . "component" .Values.mode) }}
{{- end }}

{{- define "etcdguard.componentLabels" -}}
helm.sh/chart: {{ include "etcdguard.chart" .root }}
{{ include "etcdguard.selectorLabels" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* "true" when the kit's read-only PKI directory already holds the etcd client files at their path. */}}
{{- define "etcdguard.certsInKit" -}}
{{- $v := .Values -}}
{{- if and $v.kit.enabled $v.etcdCerts.enabled (not $v.etcdCerts.existingSecret) (eq $v.etcdCerts.mountPath $v.etcdCerts.hostPath) (hasPrefix (printf "%s/" (trimSuffix "/" $v.kit.pkiDir)) $v.etcdCerts.hostPath) }}true{{ end }}
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

{{/* registry/repository@digest or registry/repository:tag. */}}
{{- define "etcdguard.image" -}}
{{- $i := .Values.image }}
{{- $repo := ternary (printf "%s/%s" (trimSuffix "/" $i.registry) $i.repository) $i.repository (ne $i.registry "") }}
{{- if $i.digest }}
{{- printf "%s@%s" $repo $i.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion $i.tag) }}
{{- end }}
{{- end }}

{{- define "etcdguard.keysSecretName" -}}
{{- default (printf "%s-keys" (include "etcdguard.fullname" .)) .Values.keys.existingSecret }}
{{- end }}

{{/* Fail early, with the value to set, on values that cannot work. */}}
{{- define "etcdguard.validate" -}}
{{- $cfg := default (dict) .Values.config }}
{{- if and (not .Values.hostStore.enabled) (not (get $cfg "store")) }}
{{- fail "config.store is required: your own bucket, e.g. --set config.store=s3://MY-BUCKET/etcd (S3 bucket names are global, so the chart has no default), or hostStore.enabled=true" }}
{{- end }}
{{- if not (dig "etcd" "endpoints" list $cfg) }}
{{- fail "config.etcd.endpoints is required: the client URL of every etcd member, e.g. --set 'config.etcd.endpoints={https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379}', so a run works while one member is down" }}
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
{{- if and .Values.keys.create (not (and .Values.keys.signingKey .Values.keys.signingPub)) }}
{{- fail "keys.create needs keys.signingKey and keys.signingPub (PEM of signing.key and signing.pub)" }}
{{- end }}
{{- end }}

{{/*
etcdguard.yaml: the chart's paths (mounted certs, process sandbox) under the user's `config:`
(the user's keys win), and hostStore over config.store. Key files are set per step through
the environment (each step mounts only the keys it needs).
*/}}
{{- define "etcdguard.config" -}}
{{- $base := dict }}
{{- if .Values.etcdCerts.enabled }}
{{- $dir := .Values.etcdCerts.mountPath }}
{{- $_ := set $base "etcd" (dict "cacert" (printf "%s/%s" $dir .Values.etcdCerts.caFile) "cert" (printf "%s/%s" $dir .Values.etcdCerts.certFile) "key" (printf "%s/%s" $dir .Values.etcdCerts.keyFile)) }}
{{- end }}
{{- $_ := set $base "verify" (dict "sandbox" "process") }}
{{- if eq .Values.mode "serve" }}
{{- /* Verification runs in its own CronJob, never in the control-plane pod. The service saves
       the kit after its snapshots (the CronJob has a kit step of its own). */}}
{{- $_ = set $base "service" (dict "verify_after_snapshot" false) }}
{{- if .Values.serve.apiToken.existingSecret }}
{{- $_ = set $base.service "api_token_file" "/etc/etcdguard/api-token/token" }}
{{- end }}
{{- $_ = set $base "kit" (dict "enabled" .Values.kit.enabled "pki_dir" .Values.kit.pkiDir "manifests_dir" .Values.kit.manifestsDir) }}
{{- end }}
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

{{/* Pod-level securityContext: dict root, user, group; runAsNonRoot follows the user. */}}
{{- define "etcdguard.podSecurityContext" -}}
{{- $ctx := deepCopy (default (dict) .root.Values.podSecurityContext) }}
{{- $_ := set $ctx "runAsUser" (int .user) }}
{{- $_ = set $ctx "runAsGroup" (int .group) }}
{{- $_ = set $ctx "runAsNonRoot" (ne (int .user) 0) }}
{{- if and (ne (int .user) 0) (not (hasKey $ctx "fsGroup")) }}
{{- $_ = set $ctx "fsGroup" (int .group) }}
{{- end }}
{{- toYaml $ctx }}
{{- end }}

{{/*
Steps. Each is a dict: name, args, and what it may see:
  etcd: the etcd client certificates        recipients, signingKey, signingPub, identity: key files
  s3: the Secret of its S3 credentials      kit: the control-plane directories (read-only)
  hostStore, emergency: host directories of the local stores; service: the service (API token)
*/}}
{{- define "etcdguard.s3Secret" -}}
{{- $s3 := .root.Values.s3 }}
{{- if eq .use "prune" }}{{ default $s3.existingSecret $s3.pruneSecret }}
{{- else if eq .use "verify" }}{{ default $s3.existingSecret $s3.verifySecret }}
{{- else }}{{ $s3.existingSecret }}{{ end }}
{{- end }}

{{/* The key files: volume name, Secret key, mount directory, env variable, config key. */}}
{{- define "etcdguard.keyFiles" -}}
{{- $k := .Values.keys -}}
recipients: {volume: key-recipients, key: {{ $k.recipientsKey | quote }}, dir: /etc/etcdguard/recipients, env: ETCDGUARD_RECIPIENTS_FILE, section: encryption, setting: recipients_file}
signingKey: {volume: key-signing, key: {{ $k.signingKeyKey | quote }}, dir: /etc/etcdguard/signing-key, env: ETCDGUARD_SIGNING_KEY, section: signing, setting: key_file}
signingPub: {volume: key-signing-pub, key: {{ $k.signingPubKey | quote }}, dir: /etc/etcdguard/signing-pub, env: ETCDGUARD_SIGNING_PUBLIC_KEYS, section: signing, setting: public_keys}
{{- end }}

{{/* Volumes of one pod: dict root, steps, tmpSize. */}}
{{- define "etcdguard.volumes" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $need := dict -}}
{{- range .steps }}
{{- range $flag, $on := . }}
{{- if and (kindIs "bool" $on) $on }}{{ $_ := set $need $flag true }}{{ end }}
{{- end }}
{{- if and .etcd (not (and .kit (include "etcdguard.certsInKit" $root))) }}{{ $_ := set $need "etcdFiles" true }}{{ end }}
{{- end -}}
- name: config
  configMap:
    name: {{ include "etcdguard.fullname" $root }}-config
{{- range $flag, $f := include "etcdguard.keyFiles" $root | fromYaml }}
{{- if hasKey $need $flag }}
- name: {{ $f.volume }}
  secret:
    secretName: {{ include "etcdguard.keysSecretName" $root }}
    defaultMode: 0440
    items:
      - key: {{ $f.key }}
        path: {{ $f.key }}
{{- end }}
{{- end }}
{{- if and (hasKey $need "etcdFiles") $v.etcdCerts.enabled }}
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
{{- if and (hasKey $need "service") $v.serve.apiToken.existingSecret }}
- name: api-token
  secret:
    secretName: {{ $v.serve.apiToken.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $v.serve.apiToken.key }}
        path: token
{{- end }}
{{- if hasKey $need "identity" }}
- name: identity
  secret:
    secretName: {{ $v.verification.identitySecret.name }}
    defaultMode: 0440
    items:
      - key: {{ $v.verification.identitySecret.key }}
        path: identity.age
{{- end }}
{{- if hasKey $need "kit" }}
- name: kit-pki
  hostPath:
    path: {{ $v.kit.pkiDir }}
    type: Directory
- name: kit-manifests
  hostPath:
    path: {{ $v.kit.manifestsDir }}
    type: Directory
{{- range $i, $p := $v.kit.extraHostPaths }}
- name: kit-extra-{{ $i }}
  hostPath:
    path: {{ $p }}
    type: Directory
{{- end }}
{{- end }}
{{- if and (hasKey $need "hostStore") $v.hostStore.enabled }}
- name: host-store
  hostPath:
    path: {{ $v.hostStore.path }}
    type: DirectoryOrCreate
{{- end }}
{{- if and (hasKey $need "emergency") $v.serve.emergencyStore.enabled }}
- name: emergency-store
  hostPath:
    path: {{ $v.serve.emergencyStore.hostPath }}
    type: DirectoryOrCreate
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmpSize }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volume mounts of one step: dict root, step. */}}
{{- define "etcdguard.volumeMounts" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $s := .step -}}
- name: config
  mountPath: /etc/etcdguard/etcdguard.yaml
  subPath: etcdguard.yaml
  readOnly: true
{{- range $flag, $f := include "etcdguard.keyFiles" $root | fromYaml }}
{{- if get $s $flag }}
- name: {{ $f.volume }}
  mountPath: {{ $f.dir }}
  readOnly: true
{{- end }}
{{- end }}
{{- /* (inside the kit's read-only PKI directory, the files are there already) */}}
{{- if and $s.etcd $v.etcdCerts.enabled (not (and $s.kit (include "etcdguard.certsInKit" $root))) }}
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
{{- if $s.identity }}
- name: identity
  mountPath: /etc/etcdguard/identity
  readOnly: true
{{- end }}
{{- if and $s.service $v.serve.apiToken.existingSecret }}
- name: api-token
  mountPath: /etc/etcdguard/api-token
  readOnly: true
{{- end }}
{{- if $s.kit }}
- name: kit-pki
  mountPath: {{ $v.kit.pkiDir }}
  readOnly: true
- name: kit-manifests
  mountPath: {{ $v.kit.manifestsDir }}
  readOnly: true
{{- range $i, $p := $v.kit.extraHostPaths }}
- name: kit-extra-{{ $i }}
  mountPath: {{ $p }}
  readOnly: true
{{- end }}
{{- end }}
{{- if and $s.hostStore $v.hostStore.enabled }}
- name: host-store
  mountPath: {{ $v.hostStore.path }}
{{- end }}
{{- if and $s.emergency $v.serve.emergencyStore.enabled }}
- name: emergency-store
  mountPath: {{ $v.serve.emergencyStore.hostPath }}
{{- end }}
- name: tmp
  mountPath: /tmp
{{- with $v.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment of one step: dict root, step. */}}
{{- define "etcdguard.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $s := .step -}}
{{- $cfg := default (dict) $v.config -}}
- name: ETCDGUARD_CONFIG
  value: /etc/etcdguard/etcdguard.yaml
- name: ETCDGUARD_STATE_DIR
  value: /tmp/etcdguard-state
{{- range $flag, $f := include "etcdguard.keyFiles" $root | fromYaml }}
{{- if and (get $s $flag) (not (dig $f.section $f.setting "" $cfg)) }}
- name: {{ $f.env }}
  value: {{ printf "%s/%s" $f.dir $f.key }}
{{- end }}
{{- end }}
{{- if $s.identity }}
- name: ETCDGUARD_IDENTITY
  value: /etc/etcdguard/identity/identity.age
{{- end }}
{{- with include "etcdguard.s3Secret" (dict "root" $root "use" $s.s3) }}
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

{{/* One etcdguard container: dict root, step, resources. The image's entrypoint is
     `tini -g -- etcdguard`: tini, as PID 1, forwards SIGTERM to etcdguard and reaps orphans. */}}
{{- define "etcdguard.container" -}}
{{- $v := .root.Values -}}
- name: {{ .step.name }}
  image: {{ include "etcdguard.image" .root }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args:
    {{- toYaml .step.args | nindent 4 }}
  env:
    {{- include "etcdguard.env" . | nindent 4 }}
  volumeMounts:
    {{- include "etcdguard.volumeMounts" . | nindent 4 }}
  securityContext:
    {{- toYaml $v.containerSecurityContext | nindent 4 }}
  {{- with .resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Job spec fields of both CronJobs: dict root, c (the CronJob's values). */}}
{{- define "etcdguard.jobPolicy" -}}
backoffLimit: {{ int .c.backoffLimit }}
activeDeadlineSeconds: {{ int .c.activeDeadlineSeconds }}
{{- if not (kindIs "invalid" .c.ttlSecondsAfterFinished) }}
ttlSecondsAfterFinished: {{ int .c.ttlSecondsAfterFinished }}
{{- end }}
# A configuration, integrity or verification failure fails the Job at once (a retry would only
# take another snapshot); a pod disrupted by a drain or preemption is retried without counting.
podFailurePolicy:
  rules:
    - action: FailJob
      onExitCodes:
        operator: In
        values: {{ toJson (default (list 3 6 7) .root.Values.cronjob.failJobExitCodes) }}
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
{{- end }}

{{/* Pod spec fields of the snapshot CronJob and the service (control-plane nodes). */}}
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
  {{- include "etcdguard.podSecurityContext" (dict "root" . "user" .Values.runAsUser "group" .Values.runAsGroup) | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
