#!/usr/bin/env bash
# Container entrypoint for workqueue.
#
# Usage: run.sh [worker|api|submit|loadtest|check|wait] [extra args...]
#   worker    (default) Celery worker; log level from WORKER_DEBUG_LEVEL (info)
#   api       gunicorn serving the Flask API on $PORT (8000)
#   submit    python3 submit_tasks.py [args...]
#   loadtest  python3 -m loadtest.run [args...] (image built with EXTRAS=loadtest)
#   check     validate the configuration and exit
#   wait      wait until the broker and the result backend answer (init step)
#   any other command is exec'd as given (e.g. run.sh /bin/sh)
#
# PYTHON: the interpreter (default: the checkout's .venv/bin/python when it
# exists, as ./dev.sh makes it, else python3, as in the image). Every other
# value comes from `python -m workqueue.settings --shell` (defaults in
# workqueue/settings.py).
#
# Each mode checks the configuration first (one clear line on error, exit 2)
# and then exec's its process, so SIGTERM from Kubernetes reaches Celery or
# gunicorn directly instead of stopping at this shell.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"
mode="${1:-worker}"
[[ $# -gt 0 ]] && shift

if [[ -n "${PYTHON:-}" ]]; then
  python=$PYTHON
elif [[ -x .venv/bin/python ]]; then
  python="$PWD/.venv/bin/python"
else
  python=python3
fi

# Validate the configuration and take the resolved values (RUNTIME_DIR,
# WORKER_DEBUG_LEVEL, ...) from the one settings module, so no default is
# written twice. A bad value stops here: one line on stderr, exit 2.
# --api adds what only the API needs (a token unless API_AUTH=off).
check_settings() {
  settings=$("$python" -m workqueue.settings --shell "$@")
  eval "$settings"
  mkdir -p "$RUNTIME_DIR"
}

# prometheus-client multiprocess mode: the processes of one service write
# into one directory, emptied at start so no stale counters survive.
metrics_dir() {
  export PROMETHEUS_MULTIPROC_DIR="$RUNTIME_DIR/prometheus-$1"
  rm -rf "$PROMETHEUS_MULTIPROC_DIR"
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
}

case "$mode" in
  worker)
    check_settings
    metrics_dir worker
    # No gossip/mingle: nothing here consumes them and they cost a broadcast
    # per worker. Event heartbeats only with WORKER_SEND_EVENTS (Flower counts
    # a worker offline without them). Remote control stays on (revoke, --deep).
    heartbeat=(--without-heartbeat)
    [[ $WORKER_SEND_EVENTS == true ]] && heartbeat=()
    exec "$python" -m celery -A worker.main worker \
      --loglevel "$WORKER_DEBUG_LEVEL" \
      --without-gossip --without-mingle "${heartbeat[@]}" \
      "$@"
    ;;
  api)
    check_settings --api
    metrics_dir api
    exec "$python" -m gunicorn -c api/gunicorn_conf.py "$@" 'api.app:create_app()'
    ;;
  submit)
    check_settings
    exec "$python" submit_tasks.py "$@"
    ;;
  loadtest)
    check_settings
    exec "$python" -m loadtest.run "$@"
    ;;
  check)
    check_settings
    ;;
  wait)
    check_settings
    exec "$python" -m cli.wait "$@"
    ;;
  *)
    exec "$mode" "$@"
    ;;
esac
