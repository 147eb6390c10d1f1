"""What TaskClient makes of what it reads: a task's view, a listed record's summary, readiness, shared answers.

A real ``TaskClient``, built without connecting (nothing is read from a
server here): these are its pure parts, fed the bytes Redis would return.
"""

from __future__ import annotations

import json
import threading

import pytest
from celery import states
from redis.exceptions import ReadOnlyError

from workqueue.client import Cached, DependencyUnavailable, TaskClient, Watch
from workqueue.publisher import BrokerBlocked
from workqueue.records import record_json

TASK_ID = "6f1c3a52-0f5e-4a8e-9d7b-2c1c7b1f0a11"
NEW_ID = "0b6f1a6e-0a66-4a39-9c49-6b9d0cf8c8e2"


@pytest.fixture
def real_client(settings):
    client = TaskClient(settings)
    yield client
    client.close()


def meta(real_client, status, result=None, **fields):
    """A stored state as Celery's Redis backend encodes it."""
    return real_client.celery.backend.encode({"status": status, "result": result, **fields})


RECORD = record_json({"task": "add", "submitted_at": "2026-12-06T10:00:00+00:00", "kwargs": {"x": 1, "y": 2}})


def test_a_submitted_task_with_no_state_yet_is_pending(real_client):
    view = real_client._view(TASK_ID, RECORD, None, None)
    assert view == {
        "id": TASK_ID, "task": "add", "state": states.PENDING, "retries": 0,
        "submitted_at": "2026-12-06T10:00:00+00:00", "completed_at": None,
    }  # fmt: skip


def test_an_id_with_neither_record_nor_state_was_never_submitted(real_client):
    assert real_client._view(TASK_ID, None, None, None) is None


def test_a_success_shows_its_result_and_completion_time(real_client):
    stored = meta(real_client, states.SUCCESS, 3, date_done="2026-12-06T10:00:01", retries=2)
    view = real_client._view(TASK_ID, RECORD, stored, None)
    assert view["result"] == 3 and view["completed_at"] == "2026-12-06T10:00:01" and view["retries"] == 2
    assert "error" not in view and "progress" not in view


@pytest.mark.parametrize("state", [states.FAILURE, states.RETRY, states.REVOKED])
def test_a_failure_shows_the_exceptions_type_and_message_never_its_repr(real_client, state):
    error = {"exc_type": "TransientError", "exc_message": ["attempt 4 failed", "on purpose"], "exc_module": "x"}
    view = real_client._view(TASK_ID, RECORD, meta(real_client, state, error), None)
    assert view["error"] == {"type": "TransientError", "message": "attempt 4 failed on purpose"}
    assert "result" not in view


def test_progress_is_shown_while_a_task_reports_it(real_client):
    view = real_client._view(TASK_ID, RECORD, meta(real_client, "PROGRESS", {"elapsed": 1, "total": 2}), None)
    assert view["state"] == "PROGRESS" and view["progress"] == {"elapsed": 1, "total": 2}
    assert view["completed_at"] is None


def test_an_unconfirmed_publish_is_flagged_until_a_worker_stores_a_state(real_client):
    record = record_json({"task": "add", "submitted_at": "t", "unconfirmed": True, "kwargs": {}})
    assert real_client._view(TASK_ID, record, None, None)["unconfirmed"] is True
    assert "unconfirmed" not in real_client._view(TASK_ID, record, meta(real_client, states.STARTED), None)


def test_retry_links_go_both_ways_and_a_task_sent_to_celery_says_so(real_client):
    record = record_json({"task": "flaky", "retry_of": TASK_ID, "via": "celery", "kwargs": {}})
    view = real_client._view(NEW_ID, record, None, NEW_ID.encode())
    assert view["retry_of"] == TASK_ID and view["retried_by"] == NEW_ID and view["via"] == "celery"


def test_a_task_without_a_record_is_named_by_its_stored_state(real_client):
    view = real_client._view(TASK_ID, None, meta(real_client, states.SUCCESS, 1, name="workqueue.add"), None)
    assert view["task"] == "add" and view["submitted_at"] is None
    other = real_client._view(TASK_ID, None, meta(real_client, states.SUCCESS, 1, name="celery.backend_cleanup"), None)
    assert other["task"] == "celery.backend_cleanup", "not ours: shown as it is"


def summary_of(real_client, raw: str) -> dict:
    data = raw.encode()
    return json.loads(real_client._record_summary(TASK_ID, data[:512], data[-64:]))


def test_a_listed_record_is_read_without_its_arguments(real_client):
    raw = record_json({"task": "xsum", "submitted_at": "t", "retry_of": TASK_ID, "kwargs": {"numbers": [1.5] * 10_000}})
    assert summary_of(real_client, raw) == {"task": "xsum", "submitted_at": "t", "retry_of": TASK_ID}


def test_a_record_of_0_2_finds_its_retry_of_after_the_arguments(real_client):
    raw = json.dumps({"task": "xsum", "submitted_at": "t", "kwargs": {"numbers": [1] * 5000}, "retry_of": TASK_ID})
    assert summary_of(real_client, raw) == {"task": "xsum", "submitted_at": "t", "retry_of": TASK_ID}


def test_an_argument_that_looks_like_the_mark_cannot_fool_the_summary(real_client):
    # Quotes inside a value are escaped in JSON: the text of the mark, before the arguments, is not the mark.
    tricky = 'x", "kwargs": {"y": 1}'
    raw = record_json({"task": "dump_context", "trace_id": tricky, "kwargs": {"x": ', "kwargs": ', "y": 1}})
    assert summary_of(real_client, raw) == {"task": "dump_context", "trace_id": tricky}


def test_no_record_is_no_summary(real_client):
    assert real_client._record_summary(TASK_ID, b"", b"") is None


STORE_OK = {"result_backend": "ok"}


@pytest.mark.parametrize(
    ("broker", "store", "says"),
    [
        (None, None, {"broker": "ok", "result_backend": "ok"}),
        (ConnectionRefusedError(111, "no"), None, {"broker": "unavailable: ConnectionRefusedError", **STORE_OK}),
        (BrokerBlocked("memory"), None, {"broker": f"blocked: {BrokerBlocked('memory')}", **STORE_OK}),
        (None, ReadOnlyError("replica"), {"broker": "ok", "result_backend": "read-only: replica"}),
    ],
)  # fmt: skip
def test_readiness_says_ok_or_why_not_for_each_server(real_client, broker, store, says):
    def check(dependency, cause):
        def run():
            if cause is not None:
                raise DependencyUnavailable(dependency, cause) from cause

        return run

    real_client.check_broker = check("broker", broker)
    real_client.check_result_store = check("result backend", store)
    assert real_client.readiness() == says


def test_a_cached_answer_is_computed_once_for_concurrent_callers_then_kept():
    computed = []
    started = threading.Event()
    release = threading.Event()

    def compute():
        computed.append(1)
        started.set()
        release.wait(5)
        return len(computed)

    cache = Cached(60)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(cache.get(compute))) for _ in range(5)]
    threads[0].start()
    started.wait(5)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert answers == [1] * 5 and computed == [1]
    assert Cached(0).get(lambda: "again") == "again", "nothing kept after its time"


def test_a_watch_gives_its_slot_back_once_however_often_it_is_closed():
    released = []
    views = (view for view in ({"state": "PENDING"}, {"state": "SUCCESS"}))
    watch = Watch(views, lambda: released.append(1))
    assert next(iter(watch)) == {"state": "PENDING"}
    watch.close()
    watch.close()
    assert released == [1]
    with pytest.raises(StopIteration):
        next(watch)
