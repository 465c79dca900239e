{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "streamfabric.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: <release>-<chart> unless the release name
already contains the chart name; truncated to 63 characters.
*/}}
{{- define "streamfabric.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "streamfabric.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels on every resource of the chart.
*/}}
{{- define "streamfabric.labels" -}}
helm.sh/chart: {{ include "streamfabric.chart" . }}
{{ include "streamfabric.selectorLabels" . }}
app.kubernetes.io/version: {{ include "streamfabric.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: streamfabric
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels (immutable on the Deployment: keep them stable).
*/}}
{{- define "streamfabric.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamfabric.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "streamfabric.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamfabric.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image tag: values.image.tag, else the chart's appVersion.
*/}}
{{- define "streamfabric.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
Full operator image reference.
*/}}
{{- define "streamfabric.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "streamfabric.imageTag" .) }}
{{- end }}

{{/*
Refuse settings the operator cannot run with yet.
*/}}
{{- define "streamfabric.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicas=%v needs leaderElection.enabled: without leader election every replica would reconcile the same DataStreams concurrently." .Values.replicas) }}
{{- end }}
{{- if lt (int .Values.replicas) 0 }}
{{- fail (printf "replicas=%v: must be 0 or more" .Values.replicas) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled (the ServiceMonitor scrapes the metrics Service)" }}
{{- end }}
{{- end }}

{{/*
The sidecar injector's names: its Service (the certificate's names), the Secret with
its certificate, and its cluster-wide MutatingWebhookConfiguration.
*/}}
{{- define "streamfabric.webhookService" -}}
{{- printf "%s-webhook" (include "streamfabric.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "streamfabric.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "streamfabric.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "streamfabric.webhookConfiguration" -}}
{{- printf "%s-sidecar-injector" (include "streamfabric.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "streamfabric.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecarInjector.image.repository (default .Chart.AppVersion .Values.sidecarInjector.image.tag) }}
{{- end }}
