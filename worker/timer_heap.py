"""Cancelled timers leave the event loop's heap within seconds, not after the soft time limit.

For every task the prefork pool arms a soft time-limit timer in the main
process and cancels it when the task ends (``on_timeout_set`` and
``on_timeout_cancel`` in ``celery/concurrency/asynpool.py``).  kombu's timer
only marks a cancelled entry: it stays in the heap until it would have fired
(``kombu/asynchronous/timer.py``, ``Timer.__iter__``), ``TASK_SOFT_TIME_LIMIT``
(540 s) later.  That is ~505 bytes per task for 540 s: ~16 MiB at 60 tasks/s
and ~180 MiB at 666 tasks/s, held by the worker's main process for nothing
(bench/README.md, "Cost as the work grows").

This step drops cancelled entries from the heap every ``INTERVAL`` seconds,
from the event loop itself (so nothing else touches the heap meanwhile).
It reads kombu's private ``Timer._queue``, a list kept as a heap of
``scheduled(eta, priority, entry)``; ``tests/unit/test_timer_heap.py``
checks that shape on the pinned kombu, and that live timers still fire in
order afterwards.
"""

from __future__ import annotations

import heapq
from typing import Any

from celery import Celery, bootsteps

INTERVAL = 10.0


def drop_cancelled(timer: Any) -> int:
    """Remove the cancelled entries of kombu ``timer``'s heap; return how many went."""
    queue = timer._queue
    live = [event for event in queue if not event.entry.canceled]
    dropped = len(queue) - len(live)
    if dropped:
        heapq.heapify(live)
        queue[:] = live  # the same list: the timer's iterator holds it
    return dropped


class DropCancelledTimersStep(bootsteps.StartStopStep):
    """Worker step: prunes the event loop's timer heap (prefork and other pools with an event loop)."""

    label = "drop cancelled timers"
    requires = ("celery.worker.components:Hub",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.entry: Any = None

    def start(self, worker: Any) -> None:
        hub = getattr(worker, "hub", None)
        if hub is not None:  # no event loop (the solo pool): no such timers either
            self.entry = hub.call_repeatedly(INTERVAL, drop_cancelled, hub.timer)

    def stop(self, worker: Any) -> None:
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None


def install(app: Celery) -> None:
    app.steps["worker"].add(DropCancelledTimersStep)
