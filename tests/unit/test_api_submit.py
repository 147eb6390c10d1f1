"""POST /tasks: what is accepted, what is refused and with which code, and the Idempotency-Key rules.

Every client mistake is a 4xx in the documented shape, before anything
reaches a store (the stand-in records every call it gets).
"""

from __future__ import annotations

import pytest
from celery import states

from api.limits import MAX_BODY_BYTES
from tests.answers import assert_error
from workqueue.client import IdempotencyConflict
from workqueue.idempotency import MAX_KEY_LENGTH
from workqueue.publisher import PublishUnconfirmed


def test_an_accepted_task_is_202_with_its_location_and_only_validated_arguments_reach_the_client(client, task_client):
    response = client.post("/tasks", json={"task": "add", "args": [2], "kwargs": {"y": 3}})
    assert response.status_code == 202
    body = response.get_json()
    assert body == {"id": body["id"], "task": "add", "state": states.PENDING}
    assert response.headers["Location"] == f"/tasks/{body['id']}"
    assert "Idempotent-Replayed" not in response.headers
    ((method, (definition, kwargs)),) = task_client.calls
    assert method == "submit" and definition.name == "add" and kwargs == {"x": 2, "y": 3}


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        ({"task": "nope"}, "unknown_task", "unknown task 'nope'"),
        ({"task": "celery.chord_unlock", "args": []}, "unknown_task", "submittable tasks: add"),
        ({"task": "workqueue.add", "args": [1, 2]}, "unknown_task", "unknown task"),
        ({"args": [1, 2]}, "unknown_task", 'no "task" given; submittable tasks: add'),
        ({"task": "add", "args": [1]}, "invalid_arguments", "'y' is a required property"),
        ({"task": "add", "args": [1, 2, 3]}, "invalid_arguments", "at most 2 positional"),
        ({"task": "add", "args": ["a", 2]}, "invalid_arguments", "not of type 'number'"),
        ({"task": "pi", "args": [10**9]}, "invalid_arguments", "greater than the maximum"),
        ({"task": "sleep", "args": [-5]}, "invalid_arguments", "less than the minimum"),
        ({"task": "add", "args": {"x": 1}}, "invalid_request", "args must be a JSON array"),
        ({"task": "add", "kwargs": [1]}, "invalid_request", "kwargs must be a JSON object"),
        ({"task": "add", "args": [1, 2], "queue": "x"}, "invalid_request", "unknown field"),
        ([1, 2], "invalid_request", "body must be a JSON object"),
        ({"task": "ädd\u0000\u202e🙂"}, "unknown_task", "unknown task"),
        ({"task": "add", "kwargs": {"x": 1, "y": 2, "🙂\udc80": 2}}, "invalid_arguments", "Additional properties"),
        ({"task": "add", "args": ["\u202e1", 2]}, "invalid_arguments", "not of type 'number'"),
        ({"task": "add", "args": [1], "kwargs": {"x": 2}}, "invalid_arguments", "both positionally and by keyword"),
        ({"task": 5}, "unknown_task", "unknown task 5"),
    ],
)
def test_invalid_submissions_are_422_and_submit_nothing(client, task_client, body, code, fragment):
    message = assert_error(client.post("/tasks", json=body), 422, code)
    assert fragment in message
    assert task_client.calls == []


def test_unknown_fields_are_named_at_most_five_and_never_echoed_long(client):
    body = {"task": "add", "args": [1, 2], **{f"field{i}": i for i in range(8)}}
    message = assert_error(client.post("/tasks", json=body), 422, "invalid_request")
    assert message.startswith("unknown field(s) ['field0', 'field1', 'field2', 'field3', 'field4']; allowed:")
    long_name = assert_error(client.post("/tasks", json={"task": "x" * 5000}), 422, "unknown_task")
    assert len(long_name) < 300


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ('{"task": "add"', "application/json", 400, "invalid_json"),
        ('{"task": "add", "args": [NaN, 1]}', "application/json", 400, "invalid_json"),
        ('{"task": "add", "args": [Infinity, 1]}', "application/json", 400, "invalid_json"),
        ("[" * 100_000 + "]" * 100_000, "application/json", 400, "invalid_json"),
        ('{"task": "pi", "args": [' + "9" * 5000 + "]}", "application/json", 400, "invalid_json"),
        ("\xff\xfe", "application/json", 400, "invalid_json"),
        ('{"task": "add", "args": [1, 2]}', "text/plain", 415, "unsupported_media_type"),
        ("task=add", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ('{"task": "add", "args": [1, 2]}', None, 415, "unsupported_media_type"),
        ("x" * (MAX_BODY_BYTES + 1), "application/json", 413, "request_entity_too_large"),
    ],
)
def test_malformed_bodies_are_refused(client, task_client, data, content_type, status, code):
    assert_error(client.post("/tasks", data=data, content_type=content_type), status, code)
    assert task_client.calls == []


def test_the_json_errors_say_what_is_wrong(client):
    post = lambda data: client.post("/tasks", data=data, content_type="application/json")  # noqa: E731
    assert assert_error(post("[" * 100_000), 400, "invalid_json") == "body is not valid JSON: nesting too deep"
    assert "an integer literal is too long" in assert_error(post("[" + "9" * 5000 + "]"), 400, "invalid_json")
    assert "NaN is not valid JSON" in assert_error(post("[NaN]"), 400, "invalid_json")
    too_big = assert_error(post("x" * (MAX_BODY_BYTES + 1)), 413, "request_entity_too_large")
    assert too_big == f"body larger than {MAX_BODY_BYTES} bytes"


def test_a_json_content_type_with_a_charset_is_json(client):
    response = client.post(
        "/tasks", data='{"task": "add", "args": [1, 2]}', content_type="application/json; charset=utf-8"
    )
    assert response.status_code == 202


# -- Idempotency-Key ---------------------------------------------------------------


def test_the_same_key_and_request_replays_the_original_task_with_200(client, task_client):
    first = client.post("/tasks", json={"task": "add", "args": [20, 22]}, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    task_id = first.get_json()["id"]
    task_client.views[task_id].update(state=states.SUCCESS, result=42)
    # The same request spelt otherwise (kwargs, another order) is the same request.
    again = client.post(
        "/tasks", json={"task": "add", "kwargs": {"y": 22, "x": 20}}, headers={"Idempotency-Key": "order-42"}
    )
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["Location"] == f"/tasks/{task_id}"
    assert again.get_json()["id"] == task_id and again.get_json()["result"] == 42


def test_a_replay_whose_task_cannot_be_read_back_still_answers_its_id(client, task_client):
    task_id = client.post("/tasks", json={"task": "mul", "args": [6, 7]}, headers={"Idempotency-Key": "k1"}).get_json()[
        "id"
    ]
    del task_client.views[task_id]  # expired, or Redis lost it
    again = client.post("/tasks", json={"task": "mul", "args": [6, 7]}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.get_json() == {"id": task_id, "task": "mul", "state": states.PENDING}


def test_a_key_used_for_another_request_is_409_naming_the_first_task(client):
    task_id = client.post("/tasks", json={"task": "add", "args": [1, 2]}, headers={"Idempotency-Key": "k"}).get_json()[
        "id"
    ]
    reused = client.post("/tasks", json={"task": "add", "args": [1, 3]}, headers={"Idempotency-Key": "k"})
    message = assert_error(reused, 409, "idempotency_key_reused")
    assert message == f"Idempotency-Key was used for another request (task {task_id})"


def test_a_key_whose_first_request_is_still_publishing_is_409_in_use(client, task_client):
    task_client.fail("submit_once", IdempotencyConflict("in_progress", "some-id"))
    response = client.post("/tasks", json={"task": "add", "args": [1, 2]}, headers={"Idempotency-Key": "busy"})
    assert assert_error(response, 409, "idempotency_key_in_use") == "a request with this Idempotency-Key is in progress"


@pytest.mark.parametrize("key", ["", "x" * (MAX_KEY_LENGTH + 1), "caf\u00e9", "tab\there", "line\x7f", "\x00"])
def test_malformed_keys_are_400_before_the_body_is_read(client, task_client, key):
    # The body is not even valid: the key is judged first.
    response = client.post("/tasks", data="not json", content_type="application/json", headers={"Idempotency-Key": key})
    assert "1-200 printable ASCII" in assert_error(response, 400, "invalid_idempotency_key")
    assert task_client.calls == []


@pytest.mark.parametrize("key", ["schedule:nightly-pi:nightly-pi-29000000", "batch:0b7f", "schedule:", "batch:x:1"])
def test_keys_of_scheduled_and_batch_runs_are_reserved(client, task_client, key):
    response = client.post("/tasks", json={"task": "add", "args": [1, 2]}, headers={"Idempotency-Key": key})
    message = assert_error(response, 400, "reserved_idempotency_key")
    assert "schedule: or batch:" in message
    assert task_client.calls == []


@pytest.mark.parametrize(
    "key", ["x", "x" * MAX_KEY_LENGTH, " ~!", "Schedule:upper-case-is-not-reserved", "a:schedule:"]
)
def test_any_other_printable_key_of_up_to_200_characters_is_taken(client, task_client, key):
    response = client.post("/tasks", json={"task": "add", "args": [1, 2]}, headers={"Idempotency-Key": key})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert task_client.calls[-1][0] == "submit_once" and task_client.calls[-1][1][2] == key


def test_an_unconfirmed_publish_under_a_key_names_that_key_to_repeat(client, task_client):
    unconfirmed = PublishUnconfirmed("6f1c3a52-0f5e-4a8e-9d7b-2c1c7b1f0a11", TimeoutError("no confirm"))
    unconfirmed.idempotency_key = "order-7"
    task_client.fail("submit_once", unconfirmed)
    response = client.post("/tasks", json={"task": "add", "args": [1, 2]}, headers={"Idempotency-Key": "order-7"})
    assert response.status_code == 504
    assert response.get_json()["error"]["idempotency_key"] == "order-7"
    assert "Idempotency-Key: order-7" in response.get_json()["error"]["message"]
