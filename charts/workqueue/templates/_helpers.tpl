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
imagePullSecrets of every pod of the chart (the workqueue image and the
brokers' images alike: a private registry mirrors them all); nothing when unset.
*/}}
{{- define "workqueue.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
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
  {{- include "workqueue.passwordEnv" $root | nindent 2 }}
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
The read-only tokens, for the API alone: optional, so a Secret without the
key starts the API with full tokens only.
*/}}
{{- define "workqueue.apiReadTokensEnv" -}}
{{- if .Values.api.auth.enabled }}
- name: API_READ_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ include "workqueue.secretName" . }}
      key: API_READ_TOKENS
      optional: true
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


{{/*
The worker pools, as a JSON list (templates cannot return structures; read
it with fromJsonArray). The default pool is the `worker` values: it consumes
Celery's default queue, keeps the object names and selector of the single
worker Deployment (immutable on upgrades) and takes its settings from the
ConfigMap. Each worker.pools entry is a pool of its own, component
"worker-<name>" (so no selector overlaps another pool's pods), whose values
are `worker`'s overridden by the entry's, and whose own settings become env
of its Deployment (env wins over the ConfigMap's envFrom).
(_validate.tpl refuses what would not work: workqueue.checkWorkerPools.)
Each item: name ("" for the default), component, queues, values, env.
*/}}
{{- define "workqueue.workerPools" -}}
{{- $root := . }}
{{- $base := omit .Values.worker "pools" }}
{{- $pools := list (dict "name" "" "component" "worker" "queues" (list "celery") "values" $base "env" list) }}
{{- range $name, $pool := .Values.worker.pools }}
{{- $env := list (dict "name" "WORKER_QUEUES" "value" (join "," $pool.queues)) }}
{{- range $key, $variable := dict "concurrency" "WORKER_CONCURRENCY" "prefetchMultiplier" "WORKER_PREFETCH_MULTIPLIER" "maxMemoryPerChildKb" "WORKER_MAX_MEMORY_PER_CHILD_KB" "taskSoftTimeLimit" "TASK_SOFT_TIME_LIMIT" "taskTimeLimit" "TASK_TIME_LIMIT" "shutdownTimeout" "WORKER_SHUTDOWN_TIMEOUT" }}
{{- if hasKey $pool $key }}
{{- $env = append $env (dict "name" $variable "value" (index $pool $key | int64 | toString)) }}
{{- end }}
{{- end }}
{{- $values := mergeOverwrite (deepCopy $base) (omit (deepCopy $pool) "queues" "concurrency" "prefetchMultiplier" "maxMemoryPerChildKb" "taskSoftTimeLimit" "taskTimeLimit" "shutdownTimeout") }}
{{- $pools = append $pools (dict "name" $name "component" (printf "worker-%s" $name) "queues" $pool.queues "values" $values "env" $env) }}
{{- end }}
{{- toJson $pools }}
{{- end }}

{{/*
Components whose pods reach the broker and Redis: the API, every worker
pool, clients, and the extra ones given.
Usage: include "workqueue.brokerClients" (list . (list "flower"))
*/}}
{{- define "workqueue.brokerClients" -}}
{{- $root := index . 0 -}}
{{- $components := list "api" }}
{{- range include "workqueue.workerPools" $root | fromJsonArray }}
{{- $components = append $components .component }}
{{- end }}
{{- $components = concat $components (list "client") (index . 1) }}
{{- $quoted := list }}
{{- range $components }}{{ $quoted = append $quoted (quote .) }}{{ end -}}
[{{ join ", " $quoted }}]
{{- end }}

{{/*
"true" when some worker pool scales with KEDA, else empty.
*/}}
{{- define "workqueue.anyKeda" -}}
{{- range include "workqueue.workerPools" . | fromJsonArray }}
{{- if .values.keda.enabled }}true{{ end }}
{{- end }}
{{- end }}

{{/*
The init container that waits for a real AMQP handshake and a Redis round
trip (not just DNS), so a pod shows Init while the broker boots instead of
crash-looping or spending its own timeout on it.
*/}}
{{- define "workqueue.waitForDependencies" -}}
- name: wait-for-dependencies
  image: {{ include "workqueue.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["wait"]
  {{- include "workqueue.appEnv" . | nindent 2 }}
  resources:
    requests:
      cpu: 10m
      memory: 64Mi
    limits:
      cpu: 500m
      memory: 128Mi
  securityContext:
    {{- include "workqueue.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    {{- include "workqueue.appVolumeMounts" . | nindent 4 }}
{{- end }}

{{/*
A task call's arguments as container args: JSON, with "$(" doubled so the
kubelet, which expands $(VAR) in args, passes them as written.
Usage: include "workqueue.jsonArg" .args
*/}}
{{- define "workqueue.jsonArg" -}}
{{- toJson . | replace "$(" "$$(" }}
{{- end }}

{{/*
The pod template of a batch submission (a schedule's run, the batch Job):
`run.sh submit --batch ...` in a client pod (the NetworkPolicies let it
reach the broker and Redis), restricted like every pod of the chart. The
Job's name and UID come from the labels the Job controller puts on its pods
(batch.kubernetes.io/job-name, batch.kubernetes.io/controller-uid), as
JOB_NAME and JOB_UID, for idempotency keys in the args.
Usage: include "workqueue.submitPod" (dict "root" $ "values" $values "args" $args "wait" true)
*/}}
{{- define "workqueue.submitPod" -}}
{{- $root := .root -}}
{{- $values := .values -}}
metadata:
  labels:
    {{- include "workqueue.podLabels" (list $root "client" $values) | nindent 4 }}
  {{- with $values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  # Never: a failed pod stays for its logs; the Job's backoffLimit retries.
  restartPolicy: Never
  {{- with include "workqueue.imagePullSecrets" $root }}{{ . | nindent 2 }}{{ end }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- include "workqueue.placement" (list $root "client" $values) | trim | nindent 2 }}
  {{- if .wait }}
  initContainers:
    {{- include "workqueue.waitForDependencies" $root | nindent 4 }}
  {{- end }}
  containers:
    - name: submit
      image: {{ include "workqueue.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        {{- toYaml .args | nindent 8 }}
      {{- $jobEnv := list (dict "name" "JOB_NAME" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.labels['batch.kubernetes.io/job-name']"))) (dict "name" "JOB_UID" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.labels['batch.kubernetes.io/controller-uid']"))) }}
      {{- include "workqueue.appEnvOf" (list $root (dict "extraEnv" (concat $jobEnv ($values.extraEnv | default list)))) | nindent 6 }}
      resources:
        {{- toYaml ($values.resources | default (dict "requests" (dict "cpu" "50m" "memory" "64Mi") "limits" (dict "cpu" "500m" "memory" "256Mi"))) | nindent 8 }}
      securityContext:
        {{- include "workqueue.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        {{- include "workqueue.appVolumeMounts" $root | nindent 8 }}
  volumes:
    {{- include "workqueue.appVolumes" $root | nindent 4 }}
{{- end }}
