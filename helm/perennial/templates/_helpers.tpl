{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "perennial.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "perennial.fullname" -}}
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

{{- define "perennial.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "perennial.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component (server or learner): call with (list . "server"). */}}
{{- define "perennial.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "perennial.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "perennial.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The server's image: the Dockerfile's slim `server` target, or the full image when unset. */}}
{{- define "perennial.serverImage" -}}
{{ .Values.image.serverRepository | default .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "perennial.secretName" -}}
{{ include "perennial.fullname" . }}-secrets
{{- end }}

{{- define "perennial.registryClaim" -}}
{{ .Values.registry.existingClaim | default (printf "%s-registry" (include "perennial.fullname" .)) }}
{{- end }}

{{/* Environment shared by every container: settings from the ConfigMap, secrets from Secrets. */}}
{{- define "perennial.env" -}}
- name: OMP_NUM_THREADS
  valueFrom:
    resourceFieldRef: {resource: requests.cpu, divisor: "1"}
{{- if .Values.kafka.sasl.enabled }}
- name: PERENNIAL_KAFKA__SECURITY__SASL_PLAIN_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .Values.kafka.sasl.existingSecret | default (include "perennial.secretName" .) }}, key: sasl-username}
- name: PERENNIAL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.kafka.sasl.existingSecret | default (include "perennial.secretName" .) }}, key: sasl-password}
{{- end }}
{{- if or .Values.admin.token .Values.admin.existingSecret }}
- name: PERENNIAL_SERVE__ADMIN_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ .Values.admin.existingSecret | default (include "perennial.secretName" .) }}, key: admin-token}
{{- end }}
{{- include "perennial.configEnv" (dict "prefix" "PERENNIAL_" "map" .Values.config) }}
{{- end }}

{{- define "perennial.tlsMount" -}}
{{- if .Values.kafka.tls.enabled }}
- name: kafka-tls
  mountPath: /etc/perennial/kafka-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "perennial.tlsVolume" -}}
{{- if .Values.kafka.tls.enabled }}
- name: kafka-tls
  secret: {secretName: {{ required "kafka.tls.secretName is required when kafka.tls.enabled" .Values.kafka.tls.secretName }}}
{{- end }}
{{- end }}

{{- define "perennial.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}{{ .Values.serviceAccount.name | default (include "perennial.fullname" .) }}{{ else }}{{ .Values.serviceAccount.name | default "default" }}{{ end }}
{{- end }}

{{/* Pod metadata and spec lines shared by every pod: call in a pod template's metadata with (list . "server"). */}}
{{- define "perennial.podLabels" -}}
{{- $root := index . 0 -}}
{{ include "perennial.selectorLabels" . }}
{{- with $root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The free-form `config:` map as container env entries PERENNIAL_*: nested keys joined by __,
upper-cased; whole numbers written as integers (YAML numbers reach templates as floats: 2592000 would
read 2.592e+06), lists as JSON. In `env`, so they win over the ConfigMap's (envFrom). */}}
{{- define "perennial.configEnv" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .map }}
{{- $name := printf "%s%s" $prefix ($key | upper) }}
{{- if kindIs "map" $value }}
{{- include "perennial.configEnv" (dict "prefix" (printf "%s__" $name) "map" $value) }}
{{- else if and (kindIs "float64" $value) (eq (float64 (int64 $value)) $value) }}
- {name: {{ $name }}, value: {{ int64 $value | quote }}}
{{- else if kindIs "slice" $value }}
- {name: {{ $name }}, value: {{ toJson $value | quote }}}
{{- else }}
- {name: {{ $name }}, value: {{ $value | toString | quote }}}
{{- end }}
{{- end }}
{{- end -}}
