#!/usr/bin/env bash
# Exec probe for the Celery worker: cheap, local, exit 0 (healthy) or 1.
#
# Usage: celery_status.sh [--live|--ready|--deep]
#   --live   (default) the worker's heartbeat file is fresh: its event loop
#            turns. Does not depend on the broker, so a broker outage never
#            restarts every worker at once.
#   --ready  --live, and this worker's consumer is connected to the broker.
#   --deep   ask only this worker over the broker (celery inspect ping
#            -d celery@$HOSTNAME); costs a Python start-up, for operators.
#
# --live and --ready start no process: bash builtins read two small files
# that the worker writes into $RUNTIME_DIR (see worker/probes.py).
# Silent on success; one line on stdout on failure (kubelet shows it).
#
# Environment: RUNTIME_DIR (default /tmp/workqueue) and WORKER_HEARTBEAT_MAX_AGE
# (default 30 s), the same defaults as workqueue/settings.py (a test keeps
# them equal: a probe cannot afford a Python start-up to read them);
# --deep also reads WORKER_NODENAME (default celery@$HOSTNAME), PROBE_TIMEOUT
# (default 5 s) and PYTHON (default python3).
set -uo pipefail

dir="${RUNTIME_DIR:-/tmp/workqueue}"
max_age="${WORKER_HEARTBEAT_MAX_AGE:-30}"

fail() { echo "celery_status: $*"; exit 1; }

check_live() {
  local stamp=""
  { read -r stamp < "$dir/worker.heartbeat"; } 2>/dev/null || fail "no heartbeat file in $dir (worker not started?)"
  [[ $stamp =~ ^[0-9]+$ ]] || fail "heartbeat file is malformed"
  local age=$(( EPOCHSECONDS - stamp ))
  (( age <= max_age )) || fail "heartbeat is ${age}s old (limit ${max_age}s): worker hung or stopped"
}

check_ready() {
  check_live
  [[ -e "$dir/worker.ready" ]] || fail "consumer not connected to the broker"
}

check_deep() {
  cd "$(dirname "$(readlink -f "$0")")" || fail "cannot enter the app directory"
  local node="${WORKER_NODENAME:-celery@${HOSTNAME}}" output
  output=$("${PYTHON:-python3}" -m celery -A worker.main inspect ping -d "$node" --timeout "${PROBE_TIMEOUT:-5}" 2>&1) \
    || fail "$node did not answer a ping: ${output##*$'\n'}"
}

case "${1:---live}" in
  --live) check_live ;;
  --ready) check_ready ;;
  --deep) check_deep ;;
  *) echo "usage: celery_status.sh [--live|--ready|--deep]" >&2; exit 2 ;;
esac
exit 0
