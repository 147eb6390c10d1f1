"""Probe files the worker keeps for ``celery_status.sh`` (liveness/readiness).

* ``worker.heartbeat`` holds the epoch second of the last heartbeat.  A
  thread writes it every ``heartbeat_interval`` seconds, but only while the
  worker's event loop has ticked recently (or the consumer is between
  connections, when Celery's reconnect loop runs instead of the event
  loop).  A stopped (SIGSTOP), deadlocked or wedged worker stops
  heartbeating, and the liveness probe fails; a broker outage does not.
* ``worker.ready`` exists only while this worker's consumer is connected to
  the broker and consuming.  It is removed when the connection drops, and
  on start-up, so a file left by a previous container of the same pod never
  claims readiness.

Both files live in ``RUNTIME_DIR`` (an emptyDir under a read-only root).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from celery import Celery, bootsteps

from workqueue.celery_app import settings_of

HEARTBEAT_FILE = "worker.heartbeat"
READY_FILE = "worker.ready"
LOOP_TICK_SECONDS = 1.0


class ProbeFiles:
    """The two files and the state that decides when to write them."""

    def __init__(self, directory: str, interval: float) -> None:
        self.directory = directory
        self.interval = interval
        # A loop that has not ticked for this long is considered wedged.
        self.stall_limit = max(5 * interval, 5 * LOOP_TICK_SECONDS)
        self.connected = False
        self.last_tick = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _write(self, name: str, text: str) -> None:
        target = self.path(name)
        temporary = f"{target}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="ascii") as handle:
            handle.write(text)
        os.replace(temporary, target)  # atomic: the probe never reads half a file

    def _remove(self, name: str) -> None:
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            pass

    def tick(self) -> None:
        """Called from the event loop: proves the loop is turning."""
        self.last_tick = time.monotonic()

    def healthy(self) -> bool:
        return not self.connected or time.monotonic() - self.last_tick < self.stall_limit

    def beat(self) -> None:
        if self.healthy():
            self._write(HEARTBEAT_FILE, f"{int(time.time())}\n")

    def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        self._remove(READY_FILE)
        self.beat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="probe-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        # Join the thread first: a beat in flight would otherwise write the
        # heartbeat again after it was removed (seen in CI).
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.set_ready(False)
        self._remove(HEARTBEAT_FILE)

    def set_ready(self, ready: bool) -> None:
        self.connected = ready
        self.last_tick = time.monotonic()
        if ready:
            self._write(READY_FILE, f"{os.getpid()}\n")
        else:
            self._remove(READY_FILE)


class HeartbeatStep(bootsteps.StartStopStep):
    """Worker step: owns the probe files and the heartbeat thread."""

    label = "probe heartbeat"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        settings = settings_of(worker.app)
        worker.probe_files = ProbeFiles(settings.runtime_dir, settings.heartbeat_interval)

    def start(self, worker: Any) -> None:
        worker.probe_files.start()

    def stop(self, worker: Any) -> None:
        worker.probe_files.stop()

    def terminate(self, worker: Any) -> None:
        worker.probe_files.stop()


class ReadinessStep(bootsteps.StartStopStep):
    """Consumer step: ready while consuming; ticks from the event loop.

    It starts after the task consumer step and is stopped by Celery whenever
    the connection is lost.  That step only declares the queues: the
    ``basic.consume`` is sent when the event loop starts, after every step
    (``celery.worker.loops.asynloop``).  So "ready" is set from the loop's
    first turn, when messages can really arrive.
    """

    label = "probe readiness"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self._timer_entry: Any = None

    def start(self, consumer: Any) -> None:
        files: ProbeFiles = consumer.controller.probe_files
        self._timer_entry = consumer.timer.call_repeatedly(LOOP_TICK_SECONDS, files.tick)
        if consumer.hub is not None:
            consumer.hub.call_soon(files.set_ready, True)
        else:  # no event loop (a pool without one): consuming starts with the step
            files.set_ready(True)

    def stop(self, consumer: Any) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None
        consumer.controller.probe_files.set_ready(False)

    shutdown = stop


def install(app: Celery) -> None:
    app.steps["worker"].add(HeartbeatStep)
    app.steps["consumer"].add(ReadinessStep)
