"""The worker's result store (workqueue/result_store.py) against a real Redis."""

from __future__ import annotations

import concurrent.futures
import json
import time
from types import SimpleNamespace

import pytest
import redis
from celery import states
from celery.app.task import Context

from worker.celery_tasks import count_delivery
from workqueue import throughput
from workqueue.celery_app import close_celery, create_celery
from workqueue.result_store import SUBMITTED_HEADER, ResultStore, note_start


@pytest.fixture
def app(make_settings, broker_url, backend_url):
    app = create_celery(make_settings(broker_url, backend_url, result_expires=3600), role="worker")
    yield app
    close_celery(app)


def request(task_id: str) -> Context:
    """What Celery's tracer passes: the task's request (extended fields included)."""
    return Context(
        id=task_id, task="workqueue.add", args=[], kwargs={"x": 1, "y": 2}, hostname="w@h", retries=0,
        delivery_info={"routing_key": "celery"},
    )  # fmt: skip


def started(app, task_id: str, task: Context | None = None) -> None:
    """As Celery's tracer records STARTED."""
    task = task or request(task_id)
    app.backend.store_result(task_id, {"pid": 1, "hostname": "w@h"}, states.STARTED, request=task)


def stored(app, task_id: str) -> dict:
    raw = redis.Redis.from_url(app.conf.result_backend).get(app.backend.get_key_for_task(task_id))
    return json.loads(raw)


def test_a_redis_result_backend_is_the_result_store(app):
    assert isinstance(app.backend, ResultStore)


def test_a_state_is_stored_and_published_in_one_write(app):
    client = redis.Redis.from_url(app.conf.result_backend)
    key = app.backend.get_key_for_task("t-publish")
    pubsub = client.pubsub()
    pubsub.subscribe(key)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    started(app, "t-publish")
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message is not None and json.loads(message["data"])["status"] == states.STARTED
    meta = stored(app, "t-publish")
    assert meta["status"] == states.STARTED and meta["task_id"] == "t-publish"
    # result_extended without the arguments (the submission record has them)
    assert meta["name"] == "workqueue.add" and meta["retries"] == 0 and meta["queue"] == "celery"
    assert "args" not in meta and "kwargs" not in meta
    assert 3500 < client.ttl(key) <= 3600


FINAL = {
    states.SUCCESS: lambda app, i: app.backend.mark_as_done(i, 3, request=request(i)),
    states.FAILURE: lambda app, i: app.backend.mark_as_failure(i, RuntimeError("first"), request=request(i)),
    states.REVOKED: lambda app, i: app.backend.mark_as_revoked(i, "first", request=request(i)),
}


@pytest.mark.parametrize("final", FINAL)
def test_a_late_copy_never_overwrites_a_final_state(app, final):
    task_id = f"t-late-{final}"
    FINAL[final](app, task_id)
    kept = stored(app, task_id)
    # A redelivered copy starting, reporting progress, retrying, then ending otherwise:
    started(app, task_id)
    app.backend.store_result(task_id, {"step": 1}, "PROGRESS", request=request(task_id))
    app.backend.mark_as_retry(task_id, RuntimeError("again"), request=request(task_id))
    for other, mark in FINAL.items():
        if other != final:
            mark(app, task_id)
    assert stored(app, task_id) == kept
    assert app.backend.get_task_meta(task_id, cache=False)["status"] == final


def test_the_delivery_count_is_atomic(app):
    """Many workers counting redeliveries of one message at once: each gets its own number."""
    task = request("t-count")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(lambda _: count_delivery(app.backend, task, 3600), range(40)))
    assert sorted(counts) == list(range(1, 41))


def test_states_before_success_are_overwritten(app):
    started(app, "t-seq")
    app.backend.mark_as_retry("t-seq", RuntimeError("again"), request=request("t-seq"))
    assert stored(app, "t-seq")["status"] == states.RETRY
    app.backend.mark_as_done("t-seq", 5, request=request("t-seq"))
    assert stored(app, "t-seq")["status"] == states.SUCCESS


def test_an_embedded_file_store_keeps_celerys_backend(make_settings, tmp_path):
    app = create_celery(make_settings("filesystem://", f"file://{tmp_path}/results"), role="worker")
    try:
        assert not isinstance(app.backend, ResultStore)
    finally:
        close_celery(app)


# -- STARTED only for a task still running after TASK_STARTED_DELAY ----------------


def running(task_id: str, queue: str) -> Context:
    """The request of a task running in a pool process (``note_start`` ran), submitted by the API."""
    task = request(task_id)
    task.delivery_info = {"routing_key": queue}
    setattr(task, SUBMITTED_HEADER, time.time() - 0.02)
    note_start(SimpleNamespace(request=task))
    return task


class Watch:
    """Every state published for one task, in order, and the queue-wait counts of its queue."""

    def __init__(self, app, task_id: str) -> None:
        self.app, self.queue = app, f"q-{task_id}"
        self.client = redis.Redis.from_url(app.conf.result_backend)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(app.backend.get_key_for_task(task_id))
        assert self.pubsub.get_message(timeout=5)["type"] == "subscribe"

    def next(self, timeout: float) -> str | None:
        message = self.pubsub.get_message(timeout=timeout)
        return None if message is None else json.loads(message["data"])["status"]

    def states(self, settle: float = 0.3) -> list[str]:
        """The states published until none came for ``settle`` seconds."""
        seen = []
        while (state := self.next(settle)) is not None:
            seen.append(state)
        return seen

    def waits_counted(self) -> int:
        # This minute's counters and the last one's: a count made at hh:mm:59.9
        # is in the minute before the read (a fresh-clone run failed so).
        now, total = time.time(), 0
        for minute in {throughput.minute_of(now), throughput.minute_of(now - 60)}:
            counts = self.client.hgetall(self.app.backend.key_t(throughput.key_name(minute)))
            total += sum(int(n) for field, n in counts.items() if field.decode().startswith(f"wait:{self.queue}:"))
        return total

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def deferring(make_settings, broker_url, backend_url):
    """A worker's app whose STARTED waits ``delay`` seconds, and a ``Watch`` of one task on it."""
    made = []

    def make(delay: float, task_id: str):
        app = create_celery(make_settings(broker_url, backend_url, task_started_delay=delay), role="worker")
        made.append((app, Watch(app, task_id)))
        return made[-1]

    yield make
    for app, seen in made:
        seen.close()
        close_celery(app)


def test_a_task_ending_within_the_delay_goes_from_pending_to_its_final_state(deferring):
    # A long delay: a loaded machine cannot stall this thread past it between the two calls.
    app, seen = deferring(5, "t-quick")
    task = running("t-quick", seen.queue)
    started(app, "t-quick", task)
    app.backend.mark_as_done("t-quick", 3, request=task)
    assert seen.states() == [states.SUCCESS]
    assert seen.waits_counted() == 1  # counted at the final state, since no STARTED was stored


def test_a_task_running_past_the_delay_shows_started_first(deferring):
    app, seen = deferring(0.1, "t-slow")
    task = running("t-slow", seen.queue)
    started(app, "t-slow", task)
    assert seen.next(timeout=10) == states.STARTED
    app.backend.mark_as_done("t-slow", 3, request=task)
    assert seen.states() == [states.SUCCESS]
    assert seen.waits_counted() == 1  # counted at STARTED, not again


def test_a_progress_report_within_the_delay_is_never_followed_by_started(deferring):
    app, seen = deferring(0.1, "t-progress")
    task = running("t-progress", seen.queue)
    started(app, "t-progress", task)
    app.backend.store_result("t-progress", {"step": 1}, "PROGRESS", request=task)
    assert seen.states(settle=0.5) == ["PROGRESS"]  # five times the delay
    assert stored(app, "t-progress")["status"] == "PROGRESS"


def test_with_no_delay_started_is_stored_before_the_task_runs(deferring):
    app, seen = deferring(0, "t-at-once")
    task = running("t-at-once", seen.queue)
    started(app, "t-at-once", task)
    assert seen.next(timeout=0.05) == states.STARTED  # half the default delay: stored at once
    app.backend.mark_as_done("t-at-once", 3, request=task)
    assert seen.states() == [states.SUCCESS]
    assert seen.waits_counted() == 1
