{{- define "driftline.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "driftline.fullname" -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "driftline.labels" -}}
app.kubernetes.io/name: {{ include "driftline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: service
app.kubernetes.io/part-of: driftline
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "driftline.selector" -}}
app.kubernetes.io/name: {{ include "driftline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "driftline.secretName" -}}{{ include "driftline.fullname" . }}-secrets{{- end -}}
{{/* Several replicas share nothing on SQLite: refuse instead of silently splitting the data. */}}
{{- define "driftline.validate" -}}
{{- if and (not .Values.postgresql.enabled) (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) -}}
{{- fail "several replicas (replicaCount > 1 or autoscaling.enabled) need postgresql.enabled=true: SQLite on an emptyDir is per pod" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (not (or .Values.postgresql.existingSecret .Values.postgresql.url)) -}}
{{- fail "postgresql.enabled needs postgresql.existingSecret (a Secret with key database-url) or postgresql.url" -}}
{{- end -}}
{{- if and .Values.kafka.enabled (not .Values.kafka.bootstrapServers) -}}
{{- fail "kafka.enabled needs kafka.bootstrapServers" -}}
{{- end -}}
{{- if not (or .Values.apiToken.existingSecret .Values.apiToken.value .Values.insecure) -}}
{{- fail "set apiToken.existingSecret or apiToken.value (the service refuses open writes beyond loopback), or insecure: true" -}}
{{- end -}}
{{- if and (((.Values.config).retrain).targets) (not (or .Values.retrainSecret.existingSecret .Values.retrainSecret.value)) -}}
{{- fail "config.retrain.targets need retrainSecret.existingSecret or retrainSecret.value (the HMAC key receivers verify)" -}}
{{- end -}}
{{- end -}}
