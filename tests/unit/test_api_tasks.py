"""Reading, waiting for, streaming, revoking, retrying and listing tasks; the catalogue and the probes.

The views' own decisions: which ids are known, the bounds of every query
parameter, what a final task may not be asked, how a stream is written,
what a retry answers when the new task cannot be read back.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from celery import states
from werkzeug.test import EnvironBuilder

from api.limits import DEFAULT_LIMIT, LISTED_STATES, MAX_EVENTS_SECONDS, MAX_LIMIT, MAX_WAIT_SECONDS
from tests.answers import assert_error
from workqueue.catalogue import ValidationFailed
from workqueue.client import KEEPALIVE, IdempotencyConflict
from workqueue.index import encode_cursor


def test_a_task_is_read_as_the_client_describes_it(client, task_client):
    task_id = task_client.add(state=states.SUCCESS, result=3)
    response = client.get(f"/tasks/{task_id}")
    assert response.status_code == 200
    assert response.get_json() == task_client.views[task_id]
    assert task_client.calls == [("describe", (task_id,))], "no wait without ?wait="


@pytest.mark.parametrize("task_id", ["not-a-uuid", "1", "6f1c3a52-0f5e-4a8e-9d7b", "' OR 1=1 --"])
def test_an_id_that_is_no_uuid_is_404_without_asking_the_store(client, task_client, task_id):
    assert "ids are UUIDs" in assert_error(client.get(f"/tasks/{task_id}"), 404, "not_found")
    assert_error(client.delete(f"/tasks/{task_id}"), 404, "not_found")
    assert_error(client.post(f"/tasks/{task_id}/retry"), 404, "not_found")
    assert_error(client.get(f"/tasks/{task_id}/events"), 404, "not_found")
    assert task_client.calls == []


def test_an_unknown_id_is_404(client):
    task_id = str(uuid.uuid4())
    assert f"no task with id {task_id} was submitted" in assert_error(client.get(f"/tasks/{task_id}"), 404, "not_found")
    assert_error(client.delete(f"/tasks/{task_id}"), 404, "not_found")
    assert_error(client.get(f"/tasks/{task_id}/events"), 404, "not_found")


@pytest.mark.parametrize("wait", ["0.5", "30", "0.001", "1e1"])
def test_wait_is_handed_to_the_client_in_seconds(client, task_client, wait):
    task_id = task_client.add()
    assert client.get(f"/tasks/{task_id}?wait={wait}").status_code == 200
    assert task_client.calls[0] == ("wait", (task_id, float(wait)))


@pytest.mark.parametrize("wait", ["-1", "31", "nan", "NaN", "inf", "soon", "", "1,5", "0x10"])
def test_wait_out_of_bounds_is_422(client, task_client, wait):
    task_id = task_client.add()
    message = assert_error(client.get(f"/tasks/{task_id}?wait={wait}"), 422, "invalid_parameter")
    assert message.startswith(f"wait must be a number from 0 to {MAX_WAIT_SECONDS} (got ")
    assert task_client.calls == []


def test_wait_zero_is_a_plain_read(client, task_client):
    task_id = task_client.add()
    assert client.get(f"/tasks/{task_id}?wait=0").status_code == 200
    assert [call for call, _ in task_client.calls] == ["describe"]


def test_unknown_query_parameters_are_422_and_named(client, task_client):
    task_id = task_client.add()
    message = assert_error(client.get(f"/tasks/{task_id}?wiat=5&x=1"), 422, "invalid_parameter")
    assert message == "unknown query parameter(s) 'wiat', 'x'; allowed: wait"
    message = assert_error(client.get("/tasks?page=2"), 422, "invalid_parameter")
    assert message == "unknown query parameter(s) 'page'; allowed: state, task, cursor, limit"
    long = assert_error(client.get(f"/tasks/{task_id}?{'p' * 5000}=1"), 422, "invalid_parameter")
    assert len(long) < 200


# -- events ----------------------------------------------------------------------------


def test_events_are_one_sse_event_per_view_with_keepalive_comments_then_the_stream_ends(client, task_client):
    task_id = task_client.add()
    started = {"id": task_id, "state": "PROGRESS", "progress": {"elapsed": 0.5, "total": 1}}
    done = {"id": task_id, "state": states.SUCCESS, "result": "ünïcode"}
    task_client.timelines[task_id] = [started, KEEPALIVE, done, None, {"never": "shown"}]
    response = client.get(f"/tasks/{task_id}/events")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store" and response.headers["X-Accel-Buffering"] == "no"
    body = response.get_data(as_text=True)
    assert body == (
        f"event: state\ndata: {json.dumps(started, separators=(',', ':'))}\n\n"
        ": keep-alive\n\n"
        f"event: state\ndata: {json.dumps(done, separators=(',', ':'))}\n\n"
    )
    assert task_client.released == 1, "the slot is given back once the stream ends"
    assert task_client.calls[-1] == ("watch", (task_id, MAX_EVENTS_SECONDS, 2.0))


def test_a_stream_that_is_never_read_gives_its_slot_back(app, task_client):
    """The server closes the answer of a client that went away before its first byte: the slot comes back."""
    task_id = task_client.add()
    environ = EnvironBuilder(path=f"/tasks/{task_id}/events", query_string="timeout=10").get_environ()
    answer = app(environ, lambda status, headers: None)  # what a WSGI server calls; nothing is iterated
    assert task_client.calls[-1] == ("watch", (task_id, 10.0, 2.0)) and task_client.released == 0
    answer.close()
    assert task_client.released == 1


@pytest.mark.parametrize("timeout", ["0", "0.5", "301", "nan", "x"])
def test_the_events_timeout_is_bounded(client, task_client, timeout):
    task_id = task_client.add()
    message = assert_error(client.get(f"/tasks/{task_id}/events?timeout={timeout}"), 422, "invalid_parameter")
    assert message.startswith(f"timeout must be a number from 1 to {MAX_EVENTS_SECONDS}")
    assert "watch" not in [call for call, _ in task_client.calls]


# -- revoke --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [states.PENDING, states.STARTED, "PROGRESS", states.RETRY])
def test_an_unfinished_task_is_revoked_with_202(client, task_client, state):
    task_id = task_client.add(state=state)
    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 202
    assert response.get_json() == {**task_client.views[task_id], "revoke_requested": True}
    assert task_client.revoked == [task_id]


@pytest.mark.parametrize("state", sorted(states.READY_STATES))
def test_a_finished_task_cannot_be_revoked(client, task_client, state):
    task_id = task_client.add(state=state)
    message = assert_error(client.delete(f"/tasks/{task_id}"), 409, "already_finished")
    assert message == f"task {task_id} already finished ({state})"
    assert task_client.revoked == []


# -- retry ---------------------------------------------------------------------------------


def test_a_failed_task_is_retried_as_a_new_task_with_202(client, task_client):
    failed = task_client.add(state=states.FAILURE, kwargs={"x": 1, "y": 2})
    response = client.post(f"/tasks/{failed}/retry")
    assert response.status_code == 202
    body = response.get_json()
    assert body["retry_of"] == failed and body["task"] == "add" and body["id"] != failed
    assert response.headers["Location"] == f"/tasks/{body['id']}"
    assert task_client.records[body["id"]]["kwargs"] == {"x": 1, "y": 2}


def test_a_retry_answers_202_even_when_the_new_task_cannot_be_read_back(client, task_client):
    """The retry view's fallback (no view of the new task) used to raise KeyError: a 500 for an accepted task."""
    failed = task_client.add(state=states.FAILURE)
    real_retry = task_client.retry

    def retry_then_lose(task_id):
        new_id = real_retry(task_id)
        del task_client.views[new_id]  # Redis lost it at once
        return new_id

    task_client.retry = retry_then_lose
    response = client.post(f"/tasks/{failed}/retry")
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert body == {"id": body["id"], "task": "add", "state": states.PENDING, "retry_of": failed}
    assert response.headers["Location"] == f"/tasks/{body['id']}"


@pytest.mark.parametrize(
    ("state", "retried", "status", "code"),
    [
        (None, False, 404, "not_found"),
        (states.SUCCESS, False, 409, "not_failed"),
        (states.PENDING, False, 409, "not_failed"),
        (states.FAILURE, True, 409, "already_retried"),
    ],
)
def test_a_retry_that_cannot_be_made_says_why(client, task_client, state, retried, status, code):
    task_id = str(uuid.uuid4()) if state is None else task_client.add(state=state)
    if retried:
        task_client.views[task_id]["retried_by"] = str(uuid.uuid4())
    message = assert_error(client.post(f"/tasks/{task_id}/retry"), status, code)
    assert task_id in message


def test_a_retry_whose_arguments_are_no_longer_valid_is_422(client, task_client):
    failed = task_client.add(state=states.FAILURE)
    task_client.fail("retry", ValidationFailed("invalid_arguments", "add: 'y' is a required property"))
    message = assert_error(client.post(f"/tasks/{failed}/retry"), 422, "invalid_arguments")
    assert message == "no longer valid against today's catalogue: add: 'y' is a required property"


def test_a_retry_being_republished_by_another_request_is_409(client, task_client):
    failed = task_client.add(state=states.FAILURE)
    task_client.fail("retry", IdempotencyConflict("in_progress", failed))
    message = assert_error(client.post(f"/tasks/{failed}/retry"), 409, "retry_in_progress")
    assert message == f"task {failed} is being retried by another request"


# -- listing --------------------------------------------------------------------------------


def test_the_list_is_newest_first_with_a_cursor_for_the_next_page(client, task_client):
    ids = [task_client.add() for _ in range(3)]
    first = client.get("/tasks?limit=2").get_json()
    assert [t["id"] for t in first["tasks"]] == ids[:0:-1] and first["next_cursor"]
    second = client.get(f"/tasks?limit=2&cursor={first['next_cursor']}").get_json()
    assert [t["id"] for t in second["tasks"]] == ids[:1] and second["next_cursor"] is None
    assert task_client.calls[0] == ("list_tasks", (None, None, None, 2))


def test_list_parameters_reach_the_client_checked(client, task_client):
    assert client.get("/tasks?state=FAILURE&task=flaky&limit=500").status_code == 200
    assert task_client.calls[-1] == ("list_tasks", ("FAILURE", "flaky", None, MAX_LIMIT))
    assert client.get("/tasks").status_code == 200
    assert task_client.calls[-1] == ("list_tasks", (None, None, None, DEFAULT_LIMIT))


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("state=DONE", f"state must be one of {', '.join(LISTED_STATES)}"),
        ("state=failure", "state must be one of"),
        ("state=", "state must be one of"),
        ("task=nope", "unknown task 'nope'; submittable tasks: add"),
        ("task=workqueue.add", "unknown task 'workqueue.add'"),
        ("task=celery.chord_unlock", "unknown task 'celery.chord_unlock'"),
        ("state=BOGUS", "state must be one of"),
        ("limit=0", f"limit must be a number from 1 to {MAX_LIMIT} (got '0')"),
        ("limit=501", "limit must be a number from 1 to 500"),
        ("limit=2.5", "limit must be a number from 1 to 500"),
        ("limit=-1", "limit must be a number from 1 to 500"),
        ("limit=ten", "limit must be a number from 1 to 500"),
    ],
)
def test_list_parameters_out_of_bounds_are_422(client, task_client, query, says):
    assert says in assert_error(client.get(f"/tasks?{query}"), 422, "invalid_parameter")
    assert task_client.calls == []


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


# Valid base64 JSON of the wrong shape or with numbers no float holds (once a 500).
CRAFTED_CURSORS = (
    "[" + "9" * 400 + ', "0b6f1a6e-0a66-4a39-9c49-6b9d0cf8c8e2"]',  # OverflowError in float()
    '[NaN, "0b6f1a6e-0a66-4a39-9c49-6b9d0cf8c8e2"]',  # Redis refuses a NaN score
    '[1e400, "0b6f1a6e-0a66-4a39-9c49-6b9d0cf8c8e2"]',
    '[-1, "0b6f1a6e-0a66-4a39-9c49-6b9d0cf8c8e2"]',
    '[1, "x"]',
    '{"a": 1, "b": 2}',
    "[1, 2, 3]",
    "null",
)


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "WzEsMl0",  # valid base64 of [1,2]: not ours
        *(_cursor(raw) for raw in CRAFTED_CURSORS),
        encode_cursor(1.0, "not-a-uuid"),
        "A" * 5000,
    ],
)
def test_a_crafted_cursor_is_400(client, cursor):
    assert assert_error(client.get(f"/tasks?cursor={cursor}"), 400, "invalid_cursor") == (
        "cursor is not one this API gave out"
    )


# -- catalogue, probes ---------------------------------------------------------------


def test_the_catalogue_lists_each_task_with_its_schema(client, task_client):
    tasks = {t["name"]: t for t in client.get("/catalogue").get_json()["tasks"]}
    assert set(tasks) == set(task_client.catalogue) == {"add", "mul", "xsum", "dump_context", "pi", "sleep", "flaky"}
    assert tasks["pi"] == {
        "name": "pi",
        "summary": "Compute pi to the given number of decimal places (CPU-bound).",
        "params": ["digits"],
        "schema": task_client.catalogue["pi"].schema,
    }
    assert tasks["sleep"]["params"] == ["seconds"], "the context parameter is not a client's argument"


def test_healthz_asks_nothing_of_the_servers(client, task_client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert task_client.calls == []


@pytest.mark.parametrize(
    ("checks", "queues", "status", "says"),
    [
        ({"broker": "ok", "result_backend": "ok"}, {"celery": "ok"}, 200, "ready"),
        # A queue nobody consumes is shown, not held against the API's readiness.
        ({"broker": "ok", "result_backend": "ok"}, {"celery": "ok", "slow": "no consumer"}, 200, "ready"),
        ({"broker": "unavailable: ConnectionRefusedError", "result_backend": "ok"}, {}, 503, "unready"),
        ({"broker": "ok", "result_backend": "full: OOM command not allowed"}, {"celery": "ok"}, 503, "unready"),
    ],
)
def test_readyz_is_ready_only_when_every_check_is_ok(client, task_client, checks, queues, status, says):
    task_client.readiness = (checks, queues)
    response = client.get("/readyz")
    assert response.status_code == status
    assert response.get_json() == {"status": says, "checks": checks, "queues": queues}
