{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "workqueue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the prefix of every object name. A release named
like the chart ("workqueue") gives "workqueue", the names deploy/ uses.
*/}}
{{- define "workqueue.fullname" -}}
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
Name of a component's objects: "<fullname>-<component>".
Usage: include "workqueue.componentName" (list . "api")
*/}}
{{- define "workqueue.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "workqueue.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "workqueue.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of objects shared by all components (ConfigMap, Secret).
*/}}
{{- define "workqueue.labels" -}}
helm.sh/chart: {{ include "workqueue.chart" . }}
app.kubernetes.io/name: {{ include "workqueue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: workqueue
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels of one component. The component is part of every selector,
so no two workloads' selectors overlap.
Usage: include "workqueue.selectorLabels" (list . "worker")
*/}}
{{- define "workqueue.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "workqueue.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
All labels of one component's objects.
Usage: include "workqueue.componentLabels" (list . "worker")
*/}}
{{- define "workqueue.componentLabels" -}}
{{- $root := index . 0 -}}
{{ include "workqueue.labels" $root }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
The workqueue image, its tag defaulting to the chart's appVersion.
*/}}
{{- define "workqueue.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Name of the Secret with the passwords: existingSecret or the generated one.
*/}}
{{- define "workqueue.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-secret" (include "workqueue.fullname" .)) }}
{{- end }}

{{/*
Name of the application ConfigMap.
*/}}
{{- define "workqueue.configName" -}}
{{- printf "%s-config" (include "workqueue.fullname" .) }}
{{- end }}

{{/*
Environment of every container running the workqueue image: the settings
from the ConfigMap, and only the two passwords from the Secret (not the
Erlang cookie, which would give full control of the broker).
*/}}
{{- define "workqueue.appEnv" -}}
{{ include "workqueue.appEnvOf" (list . dict) }}
{{- end }}

{{/*
The same, plus a component's extraEnvFrom and extraEnv.
Usage: include "workqueue.appEnvOf" (list . .Values.worker)
*/}}
{{- define "workqueue.appEnvOf" -}}
{{- $root := index . 0 -}}
{{- $values := index . 1 -}}
envFrom:
  - configMapRef:
      name: {{ include "workqueue.configName" $root }}
  {{- with $values.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
env:
  - name: RABBITMQ_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "workqueue.secretName" $root }}
        key: RABBITMQ_PASSWORD
  - name: REDIS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "workqueue.secretName" $root }}
        key: REDIS_PASSWORD
  {{- with $values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
The API's bearer tokens, for the API and the HTTP load test (no other pod
gets them); nothing when api.auth.enabled is off.
*/}}
{{- define "workqueue.apiTokensEnv" -}}
{{- if .Values.api.auth.enabled }}
- name: API_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ include "workqueue.secretName" . }}
      key: API_TOKENS
{{- end }}
{{- end }}

{{/*
The writable /tmp of a read-only root filesystem (RUNTIME_DIR is
/tmp/workqueue: probe files, gunicorn and prometheus-client files).
*/}}
{{- define "workqueue.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "workqueue.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{/*
Container security context, shared by every container of the chart.
*/}}
{{- define "workqueue.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/*
Hashes for checksum/config annotations: pods roll when what they read changes.
*/}}
{{- define "workqueue.configChecksum" -}}
{{- include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{- define "workqueue.secretChecksum" -}}
{{- include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}

{{/*
Where a component's pods run: priorityClassName, nodeSelector, tolerations,
affinity and topologySpreadConstraints from its values. Without constraints
of their own, its pods spread over nodes and zones as far as the cluster
allows (ScheduleAnyway: never left Pending for it).
Usage: include "workqueue.placement" (list . "worker" .Values.worker)
*/}}
{{- define "workqueue.placement" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $values := index . 2 -}}
{{- include "workqueue.nodePlacement" $values }}
{{- if not $values.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: 1
    topologyKey: {{ . }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "workqueue.selectorLabels" (list $root $component) | nindent 8 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The same knobs for a one-off pod (load-test Job, helm test pod), which has
nothing to spread: only what the values set.
Usage: include "workqueue.nodePlacement" .Values.tests
*/}}
{{- define "workqueue.nodePlacement" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A component's pod labels: its own, and its podLabels (the schema keeps the selector's keys out).
*/}}
{{- define "workqueue.podLabels" -}}
{{- $root := index . 0 -}}
{{- $values := index . 2 -}}
{{ include "workqueue.componentLabels" (list $root (index . 1)) }}
{{- with $values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

