"""Worker step: this worker's heartbeat key in Redis, for the dashboard's live workers.

A thread writes it every ``WORKER_PRESENCE_INTERVAL`` seconds
(``workqueue/workers.py``): node name, queues, pool and concurrency, the
tasks running now, what it has processed, whether its consumer is
connected.  Like the probe heartbeat it writes only while the worker's event
loop keeps ticking, so a hung worker disappears from the list as a dead one
does: its key expires.  A clean stop deletes the key.  Redis unavailable
costs a warning, never the worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import Celery, bootsteps
from celery.worker import state as worker_state

from worker import fork_safety
from workqueue.celery_app import settings_of
from workqueue.workers import MAX_ACTIVE_LISTED, Presence

logger = logging.getLogger(__name__)


class PresenceStep(bootsteps.StartStopStep):
    label = "presence"
    # After the pool: its first processes are forked before this thread exists
    # (the guard covers the forks that replace a process later).
    requires = ("worker.probes:HeartbeatStep", "celery.worker.components:Pool")

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        settings = settings_of(worker.app)
        self.interval = settings.worker_presence_interval
        self.queues = list(settings.worker_queues)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._presence: Presence | None = None
        self.guard = fork_safety.guard()

    def start(self, worker: Any) -> None:
        if getattr(worker.app.backend, "client", None) is None:
            return  # the embedded file store: no dashboard there
        self._presence = Presence(worker.app.backend)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(worker,), name="presence", daemon=True)
        self._thread.start()

    def _run(self, worker: Any) -> None:
        warned = False
        while True:
            files = getattr(worker, "probe_files", None)
            if files is None or files.healthy():  # a wedged event loop stops the heartbeat
                try:
                    assert self._presence is not None
                    with self.guard.io():  # a TLS connect must not be under way when the pool forks
                        self._presence.beat(self.info(worker), self.interval)
                    warned = False
                except Exception as exc:  # Redis down: say so once, keep trying
                    if not warned:
                        logger.warning("presence heartbeat not written: %s", exc)
                        warned = True
            if self._stop.wait(self.interval):
                return

    def info(self, worker: Any) -> dict[str, Any]:
        active = sorted(worker_state.active_requests, key=lambda r: r.time_start or 0)
        files = getattr(worker, "probe_files", None)
        return {
            "hostname": worker.hostname,
            "pid": os.getpid(),
            "queues": self.queues,
            "pool": getattr(worker.pool_cls, "__module__", "").rsplit(".", 1)[-1] or str(worker.pool_cls),
            "concurrency": worker.concurrency,
            "connected": bool(files is not None and files.connected),
            "active_count": len(active),
            "active": [
                {"id": r.id, "task": r.name.removeprefix("workqueue."), "started": r.time_start}
                for r in active[:MAX_ACTIVE_LISTED]
            ],
            "processed": sum(worker_state.total_count.values()),
            "started_at": self.started_at,
        }

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        if self._presence is not None:
            try:
                self._presence.leave(worker.hostname)
            except Exception as exc:  # its key expires by itself
                logger.warning("presence key not removed: %s", exc)

    terminate = stop


def install(app: Celery) -> None:
    app.steps["worker"].add(PresenceStep)
