#!/usr/bin/env bash
# Container entrypoint for workqueue.
#
# Usage: run.sh [worker|api|submit|check] [extra args...]
#   worker  (default) Celery worker; log level from WORKER_DEBUG_LEVEL (info)
#   api     gunicorn serving the Flask API on $PORT (8000)
#   submit  python3 submit_tasks.py [args...]
#   check   validate the configuration and exit
#   wait    wait until the broker and the result backend answer (init step)
#   any other command is exec'd as given (e.g. run.sh /bin/sh)
#
# Each mode checks the configuration first (one clear line on error, exit 2)
# and then exec's its process, so SIGTERM from Kubernetes reaches Celery or
# gunicorn directly instead of stopping at this shell.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"
mode="${1:-worker}"
[[ $# -gt 0 ]] && shift

python="${PYTHON:-python3}"
runtime_dir="${RUNTIME_DIR:-/tmp/workqueue}"

check_settings() {
  "$python" -m worker.settings
  mkdir -p "$runtime_dir"
}

case "$mode" in
  worker)
    check_settings
    # SIGTERM -> soft shutdown (WORKER_SHUTDOWN_TIMEOUT), then cold shutdown:
    # the pod exits inside its grace period and its unfinished tasks go back
    # to the queue, instead of a warm shutdown that waits for every task.
    export REMAP_SIGTERM=SIGQUIT
    # No gossip/mingle/event heartbeats: nothing here consumes them and they
    # cost a broadcast per worker. Remote control stays on (revoke, --deep).
    exec "$python" -m celery -A worker.main worker \
      --loglevel "${WORKER_DEBUG_LEVEL:-info}" \
      --without-gossip --without-mingle --without-heartbeat \
      "$@"
    ;;
  api)
    check_settings
    # prometheus-client multiprocess mode: one directory, emptied at start.
    export PROMETHEUS_MULTIPROC_DIR="$runtime_dir/prometheus-api"
    rm -rf "$PROMETHEUS_MULTIPROC_DIR"
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    exec "$python" -m gunicorn -c api/gunicorn_conf.py "$@" 'api.app:create_app()'
    ;;
  submit)
    check_settings
    exec "$python" submit_tasks.py "$@"
    ;;
  check)
    check_settings
    ;;
  wait)
    check_settings
    exec "$python" -m worker.wait "$@"
    ;;
  *)
    exec "$mode" "$@"
    ;;
esac
