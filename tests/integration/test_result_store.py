"""The worker's result store (workqueue/result_store.py) against a real Redis."""

from __future__ import annotations

import concurrent.futures
import json

import pytest
import redis
from celery import states
from celery.app.task import Context

from worker.celery_tasks import count_delivery
from workqueue.celery_app import close_celery, create_celery
from workqueue.result_store import ResultStore


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


def started(app, task_id: str) -> None:
    """As Celery's tracer records STARTED."""
    app.backend.store_result(task_id, {"pid": 1, "hostname": "w@h"}, states.STARTED, request=request(task_id))


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
