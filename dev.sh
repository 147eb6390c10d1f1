#!/usr/bin/env bash
# Developer entry point: the two commands of the README.
#
# Usage:
#   ./dev.sh up     install into .venv and run the API + a worker locally
#                   (--embedded: the embedded broker and result store; --help)
#   ./dev.sh test   install into .venv (and RabbitMQ/Redis with apt when
#                   missing) and run the whole test suite; extra args go to pytest
#
# Needs only Python 3.11+ (PYTHON picks it). `up` uses RabbitMQ/Redis when
# configured (BROKER_URL / RABBITMQ_HOST, RESULT_BACKEND / REDIS_HOST) or
# reachable on localhost, else (or with --embedded) an embedded broker and
# result store; it writes its URLs to .workqueue-data/session.env for the
# tools. `test` uses TEST_BROKER_URL / TEST_RESULT_BACKEND when set, else
# private servers.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"
venv=".venv"

install_python_deps() {
  local stamp="$venv/.installed"
  if [[ ! -x "$venv/bin/python" ]]; then
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  # Reinstall only when the dependency list changed.
  if [[ ! -f "$stamp" ]] || ! cmp -s pyproject.toml "$stamp"; then
    # otel: tests/integration/test_tracing.py runs with tracing on.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test,loadtest,otel]'
    cp pyproject.toml "$stamp"
  fi
}

install_test_tools() {
  # checkov, in a venv of its own (tests/k8s/policy.py says why); a no-op once installed.
  "$venv/bin/python" -c 'from tests.k8s.policy import checkov; checkov()'
}

install_servers() {
  local missing=()
  if [[ -z "${TEST_BROKER_URL:-}" || -z "${TEST_RESULT_BACKEND:-}" ]]; then
    command -v redis-server >/dev/null || missing+=(redis-server)
    [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || missing+=(rabbitmq-server)
  fi
  # The dashboard's browser tests drive Debian's Chromium through Playwright
  # (`playwright install` downloads a browser, which cannot be done here).
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
      echo "dev.sh: install ${missing[*]} (or set TEST_BROKER_URL and TEST_RESULT_BACKEND for the servers)" >&2
      exit 1
    fi
    echo "dev.sh: installing ${missing[*]} with apt" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

case "${1:-}" in
  up)
    shift
    install_python_deps
    exec "$venv/bin/python" -m dev.launcher "$@"
    ;;
  test)
    shift
    install_python_deps
    install_test_tools
    install_servers
    exec "$venv/bin/python" -m pytest "$@"
    ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
