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
The queue type: config.queueType, or quorum for a replicated broker.
*/}}
{{- define "workqueue.queueType" -}}
{{- if .Values.config.queueType }}
{{- .Values.config.queueType }}
{{- else if gt (int .Values.rabbitmq.replicas) 1 }}
{{- "quorum" }}
{{- else }}
{{- "classic" }}
{{- end }}
{{- end }}

{{/*
Environment of every container running the workqueue image: the settings
from the ConfigMap, and only the two passwords from the Secret (not the
Erlang cookie, which would give full control of the broker).
*/}}
{{- define "workqueue.appEnv" -}}
envFrom:
  - configMapRef:
      name: {{ include "workqueue.configName" . }}
env:
  - name: RABBITMQ_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "workqueue.secretName" . }}
        key: RABBITMQ_PASSWORD
  - name: REDIS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "workqueue.secretName" . }}
        key: REDIS_PASSWORD
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
