{{/*
Alert rules. Prometheus' own templates ({{ $labels.x }}) are kept as raw strings.
etcdguard.rules.serve: the service's metrics (docs/monitoring.md shows them with the default
thresholds). etcdguard.rules.cronjob: kube-state-metrics series of the snapshot CronJob.
etcdguard.rules.verify: the verification CronJob (both modes).
*/}}
{{- define "etcdguard.rules.serve" -}}
{{- $t := .Values.prometheusRule.thresholds -}}
etcd:
  - alert: EtcdQuorumLost
    expr: max(etcdguard_cluster_has_quorum) == 0
    for: 1m
    labels: {severity: critical}
    annotations:
      summary: etcd has lost quorum; writes are blocked
      description: Run `etcdguard status`; bring members back or follow the disaster-recovery runbook.
  - alert: EtcdNoFaultTolerance
    expr: max(etcdguard_cluster_failures_tolerated) == 0 and max(etcdguard_cluster_voting_members) > 1
    for: 2m
    labels: {severity: critical}
    annotations:
      summary: one more etcd member failure will lose quorum
  - alert: EtcdMemberDown
    expr: max by (member, member_id) (etcdguard_member_up) == 0
    for: 2m
    labels: {severity: warning}
    annotations:
      summary: {{`etcd member {{ $labels.member }} does not answer`}}
  - alert: EtcdNoLeader
    expr: max(etcdguard_cluster_has_leader) == 0
    for: 1m
    labels: {severity: critical}
    annotations:
      summary: no etcd member sees a leader
  - alert: EtcdAlarm
    expr: max by (member, alarm) (etcdguard_member_alarm) == 1
    labels: {severity: critical}
    annotations:
      summary: {{`etcd {{ $labels.alarm }} alarm on {{ $labels.member }}`}}
      description: "NOSPACE: compact, defrag each member, then disarm (`etcdguard check` prints the commands). CORRUPT: replace the member, do not just disarm."
  - alert: EtcdDatabaseNearQuota
    expr: max by (member) (etcdguard_member_db_size_bytes / etcdguard_member_quota_backend_bytes) > {{ printf "%.2f" (divf $t.dbQuotaWarningPercent 100) }}
    for: 10m
    labels: {severity: warning}
    annotations:
      summary: {{`etcd db on {{ $labels.member }} is {{ $value | humanizePercentage }} of its quota`}}
  - alert: EtcdDatabaseAtQuota
    expr: max by (member) (etcdguard_member_db_size_bytes / etcdguard_member_quota_backend_bytes) > {{ printf "%.2f" (divf $t.dbQuotaCriticalPercent 100) }}
    for: 2m
    labels: {severity: critical}
    annotations:
      summary: {{`etcd db on {{ $labels.member }} is about to hit its quota (NOSPACE makes etcd read-only)`}}
  - alert: EtcdMemberLagging
    expr: max by (member) (etcdguard_member_raft_lag_entries) > {{ int $t.raftLagEntries }}
    for: 10m
    labels: {severity: warning}
    annotations:
      summary: {{`etcd member {{ $labels.member }} is {{ $value }} raft entries behind the leader`}}
  - alert: EtcdEvenVotingMembers
    expr: max(etcdguard_cluster_voting_members) % 2 == 0
    for: 1h
    labels: {severity: warning}
    annotations:
      summary: etcd runs an even number of voting members
  - alert: EtcdLearnerNotPromoted
    expr: max by (member) (etcdguard_member_is_learner) == 1
    for: 1h
    labels: {severity: warning}
    annotations:
      summary: {{`etcd learner {{ $labels.member }} has not been promoted for an hour`}}
  - alert: EtcdCertificateExpiryCritical
    expr: min by (path, subject) (etcdguard_certificate_expiry_days) < {{ $t.certCriticalDays }}
    labels: {severity: critical}
    annotations:
      summary: {{`certificate {{ $labels.subject }} ({{ $labels.path }}) lapses in {{ $value | humanize }} days`}}
  - alert: EtcdCertificateExpiringSoon
    expr: min by (path, subject) (etcdguard_certificate_expiry_days) < {{ $t.certWarningDays }}
    for: 1h
    labels: {severity: warning}
    annotations:
      summary: {{`certificate {{ $labels.subject }} ({{ $labels.path }}) lapses in {{ $value | humanize }} days`}}
  - alert: EtcdguardProbeStale
    expr: time() - max(etcdguard_cluster_last_probe_timestamp_seconds) > {{ int $t.probeStaleSeconds }}
    labels: {severity: warning}
    annotations:
      summary: etcdguard has not probed etcd for {{ int $t.probeStaleSeconds }} seconds
backups:
  - alert: EtcdBackupTooOld
    expr: time() - max(etcdguard_backup_last_success_timestamp_seconds) > {{ $t.backupMaxAgeHours }} * 3600
    labels: {severity: critical}
    annotations:
      summary: the newest etcd backup is older than {{ $t.backupMaxAgeHours }} hours (or there is none)
  - alert: EtcdBackupFailing
    expr: sum(increase(etcdguard_backups_total{result="failure"}[{{ $t.backupFailureWindow }}])) > 0
    labels: {severity: warning}
    annotations:
      summary: etcd backups failed in the last {{ $t.backupFailureWindow }}
  - alert: EtcdBackupVerificationFailed
    expr: min(etcdguard_verification_last_success) == 0
    labels: {severity: critical}
    annotations:
      summary: the newest etcd backup FAILED verification; do not rely on it
  - alert: EtcdBackupVerificationTooOld
    expr: time() - max(etcdguard_verification_last_timestamp_seconds) > {{ $t.verificationMaxAgeHours }} * 3600
    labels: {severity: warning}
    annotations:
      summary: no etcd backup has been verified for {{ $t.verificationMaxAgeHours }} hours (or ever)
  - alert: EtcdguardServiceAbsent
    expr: absent(etcdguard_service_loop_last_run_timestamp_seconds{namespace="{{ .Release.Namespace }}"})
    for: {{ $t.absentFor }}
    labels: {severity: critical}
    annotations:
      summary: etcdguard serve in {{ .Release.Namespace }} exports no metrics (down, crash-looping or not scraped); backup alerts cannot fire
{{- end }}

{{- define "etcdguard.rules.jobSelectors" -}}
{{- $ns := .root.Release.Namespace -}}
cron: {{ printf "namespace=%q, cronjob=%q" $ns .name | quote }}
owner: {{ printf "namespace=%q, owner_kind=\"CronJob\", owner_name=%q" $ns .name | quote }}
job: {{ printf "namespace=%q" $ns | quote }}
{{- end }}

{{/* Rules for one CronJob: dict root, name, prefix (alert name prefix), maxAgeHours, what. */}}
{{- define "etcdguard.rules.cronjobRules" -}}
{{- $s := include "etcdguard.rules.jobSelectors" . | fromYaml -}}
{{- $t := .root.Values.prometheusRule.thresholds -}}
- alert: {{ .prefix }}TooOld
  expr: time() - max(kube_cronjob_status_last_successful_time{ {{- $s.cron -}} } or kube_cronjob_created{ {{- $s.cron -}} }) > {{ .maxAgeHours }} * 3600
  labels: {severity: critical}
  annotations:
    summary: no {{ .what }} Job of CronJob {{ .root.Release.Namespace }}/{{ .name }} succeeded in the last {{ .maxAgeHours }} hours
- alert: {{ .prefix }}Failed
  expr: >-
    max(kube_job_status_start_time{ {{- $s.job -}} }
      and on (namespace, job_name) (kube_job_status_failed{ {{- $s.job -}} } > 0)
      and on (namespace, job_name) kube_job_owner{ {{- $s.owner -}} })
    > (max(kube_cronjob_status_last_successful_time{ {{- $s.cron -}} }) or vector(0))
  labels: {severity: {{ .severity }}}
  annotations:
    summary: the latest {{ .what }} Job of CronJob {{ .root.Release.Namespace }}/{{ .name }} failed
    description: {{ printf "kubectl -n %s get jobs -l app.kubernetes.io/instance=%s; kubectl -n %s logs job/JOB --all-containers" .root.Release.Namespace .root.Release.Name .root.Release.Namespace | quote }}
- alert: {{ .prefix }}Absent
  expr: absent(kube_cronjob_created{ {{- $s.cron -}} })
  for: {{ $t.absentFor }}
  labels: {severity: warning}
  annotations:
    summary: kube-state-metrics reports no CronJob {{ .root.Release.Namespace }}/{{ .name }} (deleted, or kube-state-metrics is not scraped); its alerts cannot fire
- alert: {{ .prefix }}Suspended
  expr: max(kube_cronjob_spec_suspend{ {{- $s.cron -}} }) == 1
  for: 1h
  labels: {severity: warning}
  annotations:
    summary: CronJob {{ .root.Release.Namespace }}/{{ .name }} is suspended
{{- end }}

{{- define "etcdguard.rules.cronjob" -}}
{{- $t := .Values.prometheusRule.thresholds -}}
jobs:
  {{- include "etcdguard.rules.cronjobRules" (dict "root" . "name" (include "etcdguard.fullname" .) "prefix" "EtcdguardSnapshotJob" "maxAgeHours" $t.backupMaxAgeHours "what" "snapshot" "severity" "warning") | nindent 2 }}
{{- end }}

{{- define "etcdguard.rules.verify" -}}
{{- $t := .Values.prometheusRule.thresholds -}}
jobs:
  {{- include "etcdguard.rules.cronjobRules" (dict "root" . "name" (include "etcdguard.verifyName" .) "prefix" "EtcdguardVerifyJob" "maxAgeHours" $t.verificationMaxAgeHours "what" "verification" "severity" "critical") | nindent 2 }}
{{- end }}

{{/* The groups to render: {groupKey: [rules]}, filtered by `disabled`, with runbook_url and
     the extra labels on every alert. */}}
{{- define "etcdguard.rules" -}}
{{- $p := .Values.prometheusRule -}}
{{- $byGroup := dict "etcd" list "backups" list "jobs" list -}}
{{- $sources := list (ternary "etcdguard.rules.serve" "etcdguard.rules.cronjob" (eq .Values.mode "serve")) -}}
{{- if .Values.verification.enabled }}{{ $sources = append $sources "etcdguard.rules.verify" }}{{ end -}}
{{- range $src := $sources }}
{{- range $group, $rules := include $src $ | fromYaml }}
{{- $_ := set $byGroup $group (concat (get $byGroup $group) $rules) }}
{{- end }}
{{- end -}}
{{- $groups := list -}}
{{- range $key := list "etcd" "backups" "jobs" }}
{{- $rules := list }}
{{- range (get $byGroup $key) }}
{{- if not (has .alert $p.disabled) }}
{{- $_ := set . "labels" (merge (default (dict) .labels) $p.alertLabels) }}
{{- $_ = set . "annotations" (merge .annotations (dict "runbook_url" (printf "%s#%s" $p.runbookBaseUrl (lower .alert)))) }}
{{- $rules = append $rules . }}
{{- end }}
{{- end }}
{{- if $rules }}
{{- $g := get $p.groups $key }}
{{- $group := dict "name" $g.name "rules" $rules }}
{{- with $g.interval }}{{ $_ := set $group "interval" . }}{{ end }}
{{- $groups = append $groups $group }}
{{- end }}
{{- end -}}
{{- toYaml (dict "groups" (concat $groups $p.additionalGroups)) }}
{{- end }}
