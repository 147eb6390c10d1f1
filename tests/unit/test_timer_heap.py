"""Cancelled timers leave the event loop's heap (worker/timer_heap.py), on the pinned kombu's real Hub."""

from __future__ import annotations

import time
from types import SimpleNamespace

from kombu.asynchronous.hub import Hub

from worker.main import create_worker_app
from worker.timer_heap import INTERVAL, DropCancelledTimersStep, drop_cancelled
from workqueue.settings import Settings


def fired_in_order(hub: Hub) -> list[str]:
    """Run what is due, in the order the timer hands it out."""
    fired: list[str] = []
    for _, entry in hub.timer:
        if entry is None:
            return fired
        entry()
    return fired


def test_cancelled_entries_go_and_live_ones_still_fire_in_order():
    hub, fired = Hub(), []
    # As the prefork pool does per task: a soft time-limit timer, cancelled when the task ends.
    for job in range(1000):
        hub.call_later(540, fired.append, f"soft limit of {job}").cancel()
    now = time.monotonic()
    for name, ago in (("third", 1), ("first", 3), ("second", 2)):
        hub.timer.call_at(now - ago, fired.append, (name,))
    assert len(hub.timer) == 1003  # kombu keeps cancelled entries until they are due
    assert drop_cancelled(hub.timer) == 1000
    assert len(hub.timer) == 3
    assert drop_cancelled(hub.timer) == 0
    fired_in_order(hub)
    assert fired == ["first", "second", "third"]


def test_the_step_prunes_from_the_event_loop_every_interval():
    hub = Hub()
    step = DropCancelledTimersStep(SimpleNamespace(app=None))
    step.start(SimpleNamespace(hub=hub))
    (pruner,) = hub.timer.queue
    assert 0 < pruner.eta - time.monotonic() <= INTERVAL
    assert pruner.entry.fun.__wrapped__ is drop_cancelled and pruner.entry.args == (hub.timer,)
    step.stop(SimpleNamespace(hub=hub))
    assert pruner.entry.canceled


def test_the_worker_installs_it(tmp_path):
    app = create_worker_app(
        Settings(broker_url="memory://", result_backend="cache+memory://", runtime_dir=str(tmp_path))
    )
    assert DropCancelledTimersStep in app.steps["worker"]
