"""gunicorn configuration for ``run.sh api``, derived from the shared settings.

Serving model (docs/guarantees.md, "Slow clients and the serving model";
figures in bench/README.md): gevent
workers by default.  gunicorn's threaded worker reads each request inside
one of its few threads, so a handful of clients that send slowly holds all
of them and even ``/healthz`` stops answering.  A gevent worker serves each
connection in a greenlet: a slow client costs a few kilobytes, never a
thread, and every wait (reading a socket, the broker's publisher confirm,
Redis) yields to the other requests.  Slow clients are cut after
``API_READ_TIMEOUT``: gunicorn bounds reading a request line and headers by
``keepalive`` on async workers, and ``_ReadDeadline`` below bounds the body.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from workqueue.prometheus import process_exited
from workqueue.settings import Settings

_settings = Settings.from_env()  # run.sh already checked it; this is the entry point

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.api_workers
worker_class = _settings.api_worker_class
# gevent: open connections per worker process (beyond it, new ones wait in
# the listen backlog).  gthread: API_THREADS threads read and serve requests.
worker_connections = _settings.api_worker_connections
threads = _settings.api_threads
# Heartbeat files of gunicorn workers: the writable runtime dir, not /tmp
# of a read-only root filesystem.
worker_tmp_dir = _settings.runtime_dir
timeout = 30
# SIGTERM: stop accepting, let in-flight requests finish, then exit.
graceful_timeout = 20
# How long an idle keep-alive connection stays open, and on gevent workers
# also how long a client may take to send a request's line and headers
# (gunicorn's AsyncWorker reads them under gevent.Timeout(keepalive)); a
# client that is slower is disconnected.
keepalive = _settings.api_read_timeout
# gunicorn 25+ opens a control socket under $HOME; nothing here uses it and
# $HOME is read-only in the container.
control_socket_disable = True
accesslog = _settings.api_access_log or None
errorlog = "-"
loglevel = _settings.worker_debug_level


def post_worker_init(worker: Any) -> None:  # gunicorn's hook signature
    """On gevent workers, bound the time a request's body may take to arrive."""
    if _settings.api_worker_class == "gevent":
        worker.wsgi = _ReadDeadline(worker.wsgi, _settings.api_read_timeout)


def child_exit(server, worker):  # gunicorn's hook signature
    """Drop a dead worker's live gauges from the shared metrics directory."""
    process_exited(worker.pid)


class _BodyTooSlow(Exception):
    """Raised into a greenlet whose body read passed its deadline.

    An ``Exception`` (``gevent.Timeout`` itself is a ``BaseException``) so
    that gunicorn's request body marks itself failed when it passes through,
    and gunicorn then closes the connection after answering instead of
    waiting for the rest of the body.  Not an ``OSError``: werkzeug would
    turn that into a 400 "client disconnected".
    """


class _ReadDeadline:
    """WSGI middleware: the request body must arrive within ``seconds`` of its headers.

    gunicorn has no body read timeout for async workers, and a per-read
    socket timeout would not bound a client that sends a byte every second.
    Each read of ``wsgi.input`` runs under ``gevent.Timeout`` for what is
    left of the deadline; past it the read raises werkzeug's
    ``RequestTimeout``, which the app answers as a JSON 408 (counted in its
    metrics like any other status), and the connection is closed.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["wsgi.input"] = _DeadlineInput(environ["wsgi.input"], time.monotonic() + self.seconds, self.seconds)
        return self.app(environ, start_response)


class _DeadlineInput:
    """``wsgi.input`` whose reads give up at an absolute deadline."""

    def __init__(self, stream: Any, deadline: float, seconds: float) -> None:
        self.stream = stream
        self.deadline = deadline
        self.seconds = seconds

    def read(self, size: int | None = None) -> bytes:
        return self._bounded(self.stream.read, size)

    def readline(self, size: int | None = None) -> bytes:
        return self._bounded(self.stream.readline, size)

    def readlines(self, size: int | None = None) -> list[bytes]:
        return self._bounded(self.stream.readlines, size)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _bounded(self, read: Callable[[int | None], Any], size: int | None) -> Any:
        import gevent  # only on gevent workers, after gunicorn monkey-patched the process
        from werkzeug.exceptions import RequestTimeout

        left = self.deadline - time.monotonic()
        try:
            with gevent.Timeout(max(left, 0.001), _BodyTooSlow()):
                return read(size)
        except _BodyTooSlow:
            raise RequestTimeout(f"request body not received within {self.seconds:g} s") from None
