{{/* Chart name, or nameOverride. */}}
{{- define "driftline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name: fullnameOverride; else the release name when it already holds the chart name
(`helm install driftline` gives `driftline`, as the examples' URLs expect); else release-name. */}}
{{- define "driftline.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* In-cluster URL of the service: the one form the examples use. */}}
{{- define "driftline.url" -}}
{{- printf "http://%s.%s.svc:%v" (include "driftline.fullname" .) .Release.Namespace .Values.service.port -}}
{{- end -}}

{{- define "driftline.labels" -}}
{{ include "driftline.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: service
app.kubernetes.io/part-of: driftline
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "driftline.selector" -}}
app.kubernetes.io/name: {{ include "driftline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "driftline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "driftline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret the chart makes for the write token, the retraining HMAC key and a database URL. */}}
{{- define "driftline.secretName" -}}{{ include "driftline.fullname" . }}{{- end -}}
{{- define "driftline.authSecretName" -}}{{ .Values.auth.existingSecret | default (include "driftline.secretName" .) }}{{- end -}}

{{/* Whether SQLite lives on a PersistentVolumeClaim. */}}
{{- define "driftline.pvc" -}}
{{- if and (not .Values.postgresql.enabled) .Values.persistence.enabled -}}true{{- end -}}
{{- end -}}

{{/* A secret value: given in values, else the one already in the cluster (so upgrades keep it),
else 32 random characters. Arguments: (dict "ctx" $ "value" v "key" k). */}}
{{- define "driftline.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace (include "driftline.secretName" .ctx) -}}
{{- if .value -}}
{{- .value | b64enc -}}
{{- else if and $existing (hasKey (default dict $existing.data) .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum 32 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Whether a CRD kind is served, e.g. (dict "ctx" $ "gvk" "monitoring.coreos.com/v1/ServiceMonitor"). */}}
{{- define "driftline.hasKind" -}}
{{- if .ctx.Capabilities.APIVersions.Has .gvk -}}true{{- end -}}
{{- end -}}

{{/* Refuse values that would split or lose data, with the reason. */}}
{{- define "driftline.validate" -}}
{{- if and (not .Values.postgresql.enabled) (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) -}}
{{- fail "several replicas (replicaCount > 1 or autoscaling.enabled) need postgresql.enabled=true: SQLite is one file that one pod may open" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (not (or .Values.postgresql.existingSecret .Values.postgresql.url)) -}}
{{- fail "postgresql.enabled needs postgresql.existingSecret (a Secret with key database-url) or postgresql.url" -}}
{{- end -}}
{{- if and .Values.kafka.enabled (not .Values.kafka.bootstrapServers) -}}
{{- fail "kafka.enabled needs kafka.bootstrapServers" -}}
{{- end -}}
{{- if and .Values.auth.existingSecret (or .Values.auth.writeToken .Values.auth.retrainSecret) -}}
{{- fail "auth.existingSecret and auth.writeToken/auth.retrainSecret exclude each other: the values would be ignored" -}}
{{- end -}}
{{- if not (or .Values.auth.enabled .Values.insecure) -}}
{{- fail "auth.enabled=false needs insecure: true (the service refuses open writes beyond loopback without a token)" -}}
{{- end -}}
{{- end -}}
