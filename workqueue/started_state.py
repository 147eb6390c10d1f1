"""The STARTED state of a task still running after a short delay, not of every task.

Celery stores STARTED before a task's body runs: one more Redis write per
task, about a sixth of what a no-op task costs the worker
(bench/README.md, "Worker drain rate").  Nobody can watch a task that ends
within a few milliseconds anyway.  With ``TASK_STARTED_DELAY`` above 0, a
pool process hands the write to this module's thread, which stores it once
the task has run that long; a task that ends first goes from PENDING
straight to its final state.  What a client can observe:

* a task running longer than the delay shows STARTED, as before, at most
  the delay later than Celery would have stored it;
* STARTED never comes after a later state of the same attempt: any state
  the task stores itself (PROGRESS, RETRY, its final state) first settles
  the pending STARTED (drops it, or waits for a write already under way);
  and the result store's script never writes over a final state anyway.

While Redis refuses writes the thread retries with backoff, until the task
stores a later state (whose write the task itself waits out: see
``result_store.write_in_task``).  One pool process runs one task at a time,
so at most one STARTED is pending per process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# How often the thread looks at the pending write: a wake-up per interval
# costs far less than waking it for each task would.
POLL_SECONDS = 0.02
FIRST_RETRY, MAX_RETRY = 0.05, 2.0


@dataclass
class _Pending:
    task_id: str
    due: float
    write: Callable[[], object]
    retry: float = FIRST_RETRY


class DeferredStarted:
    """One pool process's pending STARTED write and the thread that makes it."""

    def __init__(self, delay: float, retryable: Callable[[BaseException], bool]) -> None:
        self.delay = delay
        self.retryable = retryable
        self._lock = threading.Lock()  # held while writing: a later state waits for it
        self._pending: _Pending | None = None
        self._written: str | None = None  # the task whose STARTED was stored last
        self._thread_pid: int | None = None

    def defer(self, task_id: str, write: Callable[[], object]) -> None:
        """Store STARTED with ``write()`` once ``task_id`` has run for the delay."""
        self._ensure_thread()
        with self._lock:
            self._pending = _Pending(task_id, time.monotonic() + self.delay, write)

    def settle(self, task_id: str) -> bool:
        """Before a later state of ``task_id``: drop its pending STARTED; True when it was stored."""
        with self._lock:
            if self._pending is not None and self._pending.task_id == task_id:
                self._pending = None
            return self._written == task_id

    def _ensure_thread(self) -> None:
        # Pool processes are forked: a thread started in the parent does not
        # exist in the child, so each process starts its own on first use.
        if self._thread_pid != os.getpid():
            self._thread_pid = os.getpid()
            self._pending = None
            self._lock = threading.Lock()
            threading.Thread(target=self._run, name="deferred-started", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            with self._lock:
                pending = self._pending
                if pending is None or time.monotonic() < pending.due:
                    continue
                self._write(pending)

    def _write(self, pending: _Pending) -> None:
        try:
            pending.write()
        except Exception as exc:
            if not self.retryable(exc):
                logger.error("task %s: STARTED not stored (%s)", pending.task_id, exc)
                self._pending = None
                return
            if pending.retry == FIRST_RETRY:
                logger.warning("task %s: STARTED not stored yet (%s); retrying", pending.task_id, exc)
            pending.due = time.monotonic() + pending.retry
            pending.retry = min(pending.retry * 2, MAX_RETRY)
            return
        self._written, self._pending = pending.task_id, None
