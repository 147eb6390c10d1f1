"""What the worker's threads would import for the first time while the pool forks, settled in the main thread.

A process forked while another thread is inside an import inherits that
module's import lock, held by a thread that does not exist in the child:
the child's own first import of the module then waits for ever.  The prefork
pool forks at start and whenever it replaces a process, while the worker's
threads (presence, probes, metrics, the trace exporter) run, so every module
they import lazily is loaded here first, before any thread or fork exists:

* ``encodings.idna``: getaddrinfo loads it on a first connect by host name.
  Both pool processes of a ready worker hung in ``_ModuleLock.acquire``
  under getaddrinfo on their first Redis connect (py-spy, a fresh-clone run
  of 2026-12-07).
* ``librabbitmq``: every ``kombu.Connection`` to an ``amqp://`` URL tries to
  import it (kombu prefers it when installed); a failed import is not
  remembered, so each metrics scrape tried again.  It is marked absent.
* ``netrc``: ``requests`` loads it on its first request (the trace exporter's).

Imports are not the only locks a fork copies.  OpenSSL 3 guards its
algorithm and store caches with read-write locks; a pool process forked
while the presence thread was inside a TLS connect to Redis inherited one
held, and hung for ever on its own first TLS connect (py-spy:
``pthread_rwlock_wrlock`` under ``ssl.create_default_context``, a
fresh-clone run and 1 in 94 starts of a TLS worker).  So the main process's
threads do their network I/O inside ``guard().io()``, and a fork waits until
none is inside (``ForkGuard``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

LOADED = ("encodings.idna", "netrc")
ABSENT_UNLESS_INSTALLED = ("librabbitmq",)


def settle_imports() -> None:
    for name in LOADED:
        importlib.import_module(name)
    for name in ABSENT_UNLESS_INSTALLED:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]  # "import halted": no lock, no path scan


# The fork runs in the event loop, which must turn again well within the
# probes' stall limit (10 s by default), while a thread's I/O can last as
# long as Redis' timeouts (10 s, retried) when a server hangs.  OpenSSL holds
# its locks only while it computes (contexts, algorithm lookups, handshake
# steps: milliseconds), never while it waits on a socket; a thread still
# inside after this long is waiting, so the fork goes ahead, and says so.
FORK_WAIT_LIMIT = 2.0


class ForkGuard:
    """Network I/O of the main process's threads, and the forks of the pool, exclude each other.

    Threads share it (``io()``); a fork takes it alone: it waits for the
    threads inside to leave, and a thread that asks while a fork is under way
    waits for the fork.  The child gets a fresh guard: the threads of its
    parent do not exist there.  Only threads use ``io()``: the main thread
    forks, and would wait for itself.
    """

    def __init__(self, wait_limit: float = FORK_WAIT_LIMIT) -> None:
        self.wait_limit = wait_limit
        self._reset()

    def _reset(self) -> None:
        self._changed = threading.Condition()
        self._inside = 0  # threads inside io()
        self._forking = 0

    @property
    def inside(self) -> int:
        return self._inside

    @contextlib.contextmanager
    def io(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._forking)
            self._inside += 1
        try:
            yield
        finally:
            with self._changed:
                self._inside -= 1
                self._changed.notify_all()

    def before_fork(self) -> None:
        with self._changed:
            self._forking += 1
            if not self._changed.wait_for(lambda: not self._inside, self.wait_limit):
                logger.warning(
                    "forking while %d thread(s) still wait on the network after %.0f s",
                    self._inside,
                    self.wait_limit,
                )

    def after_fork_in_parent(self) -> None:
        with self._changed:
            self._forking -= 1
            self._changed.notify_all()

    def after_fork_in_child(self) -> None:
        self._reset()

    def register(self) -> None:
        """Make every fork of this process wait for the guard (cannot be undone: once per process)."""
        os.register_at_fork(
            before=self.before_fork, after_in_parent=self.after_fork_in_parent, after_in_child=self.after_fork_in_child
        )


_guard: ForkGuard | None = None
_guard_lock = threading.Lock()


def guard() -> ForkGuard:
    """This process's guard, registered for its forks on first use.

    One per process, made on demand rather than on import, because fork hooks
    are process-wide and cannot be removed.
    """
    global _guard
    with _guard_lock:
        if _guard is None:
            _guard = ForkGuard()
            _guard.register()
        return _guard
