{{/*
Where the broker and the result store are: the chart's own, or the
externalRabbitmq / externalRedis a team already runs. Every workload reads
them through these helpers, so each value applies to every pod.
*/}}

{{/*
The ConfigMap's broker and result store settings.
*/}}
{{- define "workqueue.serviceSettings" -}}
{{- $mq := .Values.externalRabbitmq -}}
{{- if $mq.enabled }}
# Broker: an external RabbitMQ (externalRabbitmq).
RABBITMQ_HOST: {{ required "externalRabbitmq.host is required with externalRabbitmq.enabled" $mq.host | quote }}
RABBITMQ_PORT: {{ $mq.port | quote }}
RABBITMQ_USERNAME: {{ $mq.username | quote }}
RABBITMQ_VHOST: {{ $mq.vhost | quote }}
{{- include "workqueue.tlsSettings" (list "RABBITMQ" $mq.tls) }}
{{- else }}
# Broker: the message-queue Service of this release.
RABBITMQ_HOST: {{ include "workqueue.componentName" (list . "message-queue") | quote }}
RABBITMQ_PORT: "5672"
RABBITMQ_USERNAME: {{ .Values.config.rabbitmqUsername | quote }}
RABBITMQ_VHOST: {{ .Values.config.rabbitmqVhost | quote }}
{{- end }}
{{- $redis := .Values.externalRedis }}
{{- if and $redis.enabled $redis.sentinel.enabled }}
# Result store: an external Redis found through Sentinel (externalRedis.sentinel).
REDIS_SENTINELS: {{ required "externalRedis.sentinel.hosts is required with externalRedis.sentinel.enabled" $redis.sentinel.hosts | quote }}
REDIS_SENTINEL_MASTER: {{ $redis.sentinel.masterName | quote }}
REDIS_DB: {{ $redis.db | quote }}
{{- else if $redis.enabled }}
# Result store: an external Redis (externalRedis).
REDIS_HOST: {{ required "externalRedis.host is required with externalRedis.enabled" $redis.host | quote }}
REDIS_PORT: {{ $redis.port | quote }}
REDIS_DB: {{ $redis.db | quote }}
{{- include "workqueue.tlsSettings" (list "REDIS" $redis.tls) }}
{{- else }}
# Result backend: the Redis Service of this release.
REDIS_HOST: {{ include "workqueue.componentName" (list . "redis") | quote }}
REDIS_PORT: {{ .Values.redis.port | quote }}
{{- end }}
{{- end }}

{{/*
TLS settings of one service, its files mounted from its tls.existingSecret.
Usage: include "workqueue.tlsSettings" (list "RABBITMQ" .Values.externalRabbitmq.tls)
*/}}
{{- define "workqueue.tlsSettings" -}}
{{- $prefix := index . 0 }}
{{- $tls := index . 1 }}
{{- if $tls.enabled }}
{{ $prefix }}_TLS: "true"
{{ $prefix }}_TLS_VERIFY_HOSTNAME: {{ $tls.verifyHostname | quote }}
{{- if $tls.existingSecret }}
{{ $prefix }}_TLS_CA_FILE: {{ printf "/etc/workqueue/tls/%s/ca.crt" (lower $prefix) | quote }}
{{- if $tls.clientCertificate }}
{{ $prefix }}_TLS_CERT_FILE: {{ printf "/etc/workqueue/tls/%s/tls.crt" (lower $prefix) | quote }}
{{ $prefix }}_TLS_KEY_FILE: {{ printf "/etc/workqueue/tls/%s/tls.key" (lower $prefix) | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The services' passwords, each from its own Secret and key.
*/}}
{{- define "workqueue.passwordEnv" -}}
- name: RABBITMQ_PASSWORD
  valueFrom:
    secretKeyRef:
      {{- if .Values.externalRabbitmq.enabled }}
      name: {{ required "externalRabbitmq.existingSecret is required with externalRabbitmq.enabled" .Values.externalRabbitmq.existingSecret }}
      key: {{ .Values.externalRabbitmq.existingSecretPasswordKey }}
      {{- else }}
      name: {{ include "workqueue.secretName" . }}
      key: RABBITMQ_PASSWORD
      {{- end }}
{{- if not .Values.externalRedis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "workqueue.secretName" . }}
      key: REDIS_PASSWORD
{{- else if .Values.externalRedis.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretPasswordKey }}
{{- end }}
{{- end }}

{{/*
Volumes and mounts of every container running the workqueue image: the
writable /tmp, and the TLS files of the external services that have them.
*/}}
{{- define "workqueue.appVolumeMounts" -}}
{{ include "workqueue.tmpVolumeMount" . }}
{{- range $name, $tls := include "workqueue.tlsSecrets" . | fromJson }}
- name: tls-{{ $name }}
  mountPath: /etc/workqueue/tls/{{ $name }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "workqueue.appVolumes" -}}
{{ include "workqueue.tmpVolume" . }}
{{- range $name, $secret := include "workqueue.tlsSecrets" . | fromJson }}
- name: tls-{{ $name }}
  secret:
    secretName: {{ $secret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/*
{"rabbitmq": <Secret>, "redis": <Secret>}: the TLS Secrets to mount.
*/}}
{{- define "workqueue.tlsSecrets" -}}
{{- $found := dict }}
{{- with .Values.externalRabbitmq }}
{{- if and .enabled .tls.enabled .tls.existingSecret }}{{ $_ := set $found "rabbitmq" .tls.existingSecret }}{{ end }}
{{- end }}
{{- with .Values.externalRedis }}
{{- if and .enabled .tls.enabled .tls.existingSecret (not .sentinel.enabled) }}{{ $_ := set $found "redis" .tls.existingSecret }}{{ end }}
{{- end }}
{{- toJson $found }}
{{- end }}

{{/*
The Secret and key KEDA reads the management API's URL from.
*/}}
{{- define "workqueue.managementUrlRef" -}}
{{- if .Values.externalRabbitmq.enabled -}}
name: {{ .Values.externalRabbitmq.existingSecret }}
key: {{ .Values.externalRabbitmq.existingSecretManagementUrlKey }}
{{- else -}}
name: {{ include "workqueue.secretName" . }}
key: RABBITMQ_MANAGEMENT_URL
{{- end }}
{{- end }}
