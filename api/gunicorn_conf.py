"""gunicorn configuration for ``run.sh api``, derived from the shared settings."""

from __future__ import annotations

import os

from prometheus_client import multiprocess

from worker.settings import Settings

_settings = Settings.from_env()  # run.sh already checked it; this is the entry point

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.api_workers
# Threads: a POST waits ~1 ms on the broker's publisher confirm; threads let
# a worker publish the next message meanwhile.
worker_class = "gthread"
threads = _settings.api_threads
# Heartbeat files of gunicorn workers: the writable runtime dir, not /tmp
# of a read-only root filesystem.
worker_tmp_dir = _settings.runtime_dir
timeout = 30
# SIGTERM: stop accepting, let in-flight requests finish, then exit.
graceful_timeout = 20
keepalive = 5
# gunicorn 25+ opens a control socket under $HOME; nothing here uses it and
# $HOME is read-only in the container.
control_socket_disable = True
accesslog = os.environ.get("API_ACCESS_LOG") or None
errorlog = "-"
loglevel = _settings.worker_debug_level


def child_exit(server, worker):  # noqa: ANN001 - gunicorn hook signature
    """Drop a dead worker's live gauges from the shared metrics directory."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(worker.pid)
