{{/*
Refusals: values that render but would not work, each with a message naming
the value to change. The naming and building helpers (_helpers.tpl,
_services.tpl) do no checking of their own; every workload template that
depends on these includes them.
*/}}

{{/*
Refuses a queue consumed by two pools, and a config.taskRoutes queue that no
pool consumes (its tasks would wait forever).
*/}}
{{- define "workqueue.checkWorkerPools" -}}
{{- $consumer := dict "celery" "worker (the default pool)" }}
{{- range $name, $pool := .Values.worker.pools }}
{{- range $pool.queues }}
{{- if hasKey $consumer . }}
{{- fail (printf "worker.pools.%s.queues: queue %q is already consumed by %s; a queue belongs to one pool" $name . (get $consumer .)) }}
{{- end }}
{{- $_ := set $consumer . (printf "worker.pools.%s" $name) }}
{{- end }}
{{- end }}
{{- range $task, $queue := .Values.config.taskRoutes }}
{{- if not (hasKey $consumer $queue) }}
{{- fail (printf "config.taskRoutes.%s: queue %q is consumed by no worker pool (worker consumes celery; add %q to the queues of a worker.pools entry)" $task $queue $queue) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Refuses shutdown and grace periods that would cut tasks short, for one pool.
Usage: include "workqueue.checkWorkerTimes" (list . $pool)
*/}}
{{- define "workqueue.checkWorkerTimes" -}}
{{- $root := index . 0 -}}
{{- $pool := index . 1 -}}
{{- $own := dict }}
{{- if $pool.name }}{{ $own = index $root.Values.worker.pools $pool.name }}{{ end }}
{{- /* Each value and the name of the value it came from: the pool's own, or the default. */ -}}
{{- $times := dict }}
{{- range $key, $default := dict "taskTimeLimit" "config.taskTimeLimit" "shutdownTimeout" "config.workerShutdownTimeout" "terminationGracePeriodSeconds" "worker.terminationGracePeriodSeconds" }}
{{- if hasKey $own $key }}
{{- $_ := set $times $key (list (float64 (index $own $key)) (printf "worker.pools.%s.%s" $pool.name $key)) }}
{{- else }}
{{- $section := index $root.Values (first (splitList "." $default)) }}
{{- $_ := set $times $key (list (float64 (index $section (last (splitList "." $default)))) $default) }}
{{- end }}
{{- end }}
{{- $timeLimit := $times.taskTimeLimit }}
{{- $shutdown := $times.shutdownTimeout }}
{{- $grace := $times.terminationGracePeriodSeconds }}
{{- if le (first $shutdown) (first $timeLimit) }}
{{- fail (printf "%s (%v s) must exceed %s (%v s): a rollout or scale-in would cut running tasks and count their redelivery toward config.taskMaxDeliveries" (last $shutdown) (first $shutdown) (last $timeLimit) (first $timeLimit)) }}
{{- end }}
{{- if lt (first $grace) (addf (first $shutdown) 10) }}
{{- fail (printf "%s (%v s) must be at least %s (%v s) + 10 s, or Kubernetes kills workers in the middle of their shutdown" (last $grace) (first $grace) (last $shutdown) (first $shutdown)) }}
{{- end }}
{{- end }}

{{/*
Refuses Flower with an external broker: it builds its broker URL from the
chart's own RabbitMQ Service.
*/}}
{{- define "workqueue.checkServices" -}}
{{- if and .Values.flower.enabled .Values.externalRabbitmq.enabled }}
{{- fail "flower.enabled is not supported with externalRabbitmq: the API's task list shows the tasks; run Flower against your broker yourself if you need it" }}
{{- end }}
{{- end }}
