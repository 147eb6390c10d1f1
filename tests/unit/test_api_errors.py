"""Every error leaves the API as ``{"error": {"code", "message"}}``: outages, unconfirmed publishes, mistakes, bugs.

The stand-in raises the real client's exceptions, built from the causes the
real client meets (a blocked broker, a full or read-only Redis, a socket
that timed out); the mapping to status, code, message and headers is the
API's (``api/errors.py``).
"""

from __future__ import annotations

import uuid

import pytest
from redis.exceptions import OutOfMemoryError, ReadOnlyError

from api.errors import RETRY_AFTER_SECONDS
from tests.answers import assert_error
from workqueue.client import DependencyUnavailable, RedisRequired, TooManyWaits, address
from workqueue.publisher import BrokerBlocked, PublishUnconfirmed

TASK_ID = "6f1c3a52-0f5e-4a8e-9d7b-2c1c7b1f0a11"
ADD = {"task": "add", "args": [1, 2]}

# (dependency, cause) -> the code a client reads, and words of the message.
OUTAGES = [
    ("broker", ConnectionRefusedError(111, "refused"), "unavailable", "broker is unavailable; nothing was queued"),
    ("result backend", TimeoutError("timed out"), "unavailable", "result backend is unavailable; nothing was queued"),
    ("broker", BrokerBlocked("memory"), "broker_blocked", "a memory or disk alarm"),
    ("result backend", OutOfMemoryError("OOM command not allowed"), "result_store_full", "(Redis) is full"),
    ("result backend", ReadOnlyError("read only replica"), "result_store_read_only", "read-only"),
]  # fmt: skip


@pytest.mark.parametrize(("dependency", "cause", "code", "says"), OUTAGES, ids=lambda v: str(v)[:20])
def test_an_outage_is_503_with_retry_after_and_a_code_per_reason(client, task_client, dependency, cause, code, says):
    task_client.fail("submit", DependencyUnavailable(dependency, cause, "10.0.0.7:5672"))
    response = client.post("/tasks", json=ADD)
    message = assert_error(response, 503, code)
    assert says in message and "retry later" in message
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert "10.0.0.7" not in message, "where the servers are stays in the log"


def test_each_reason_is_what_the_cause_says():
    reasons = {cause.__class__.__name__: DependencyUnavailable(d, cause).reason for d, cause, _, _ in OUTAGES}
    assert reasons == {
        "ConnectionRefusedError": "down", "TimeoutError": "down", "BrokerBlocked": "blocked",
        "OutOfMemoryError": "full", "ReadOnlyError": "read_only",
    }  # fmt: skip
    assert DependencyUnavailable("broker", BrokerBlocked("disk")).blocked
    unavailable = DependencyUnavailable("broker", OSError("refused"), "mq:5672")
    assert str(unavailable) == "broker unavailable at mq:5672: OSError: refused"


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("amqp://user:secret@mq.example:5672//", "mq.example:5672"),
        ("amqp://u:p@a:5672//;amqp://u:p@b:5673//", "a:5672, b:5673"),
        ("redis://:secret@[::1]:6379/0", "[::1]:6379"),
        ("redis://redis/0", "redis"),
        ("file:///var/lib/workqueue/results", "/var/lib/workqueue/results"),
    ],
)
def test_where_a_server_is_never_includes_credentials(url, where):
    assert address(url) == where
    assert "secret" not in address(url)


@pytest.mark.parametrize(
    ("route", "method", "call"),
    [
        ("/tasks/{id}", "get", "describe"),
        ("/tasks/{id}?wait=5", "get", "wait"),
        ("/tasks/{id}", "delete", "revoke"),
        ("/tasks/{id}/retry", "post", "retry"),
        ("/tasks", "get", "list_tasks"),
        ("/tasks/{id}/events", "get", "watch"),
    ],
)
def test_every_route_that_reads_or_changes_tasks_answers_an_outage_with_503(client, task_client, route, method, call):
    task_id = task_client.add(state="PENDING")
    task_client.fail(call, DependencyUnavailable("result backend", OSError("refused")))
    response = getattr(client, method)(route.format(id=task_id))
    assert_error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)


def test_an_unconfirmed_publish_is_504_with_the_task_and_the_key_to_repeat_with(client, task_client):
    unconfirmed = PublishUnconfirmed(TASK_ID, TimeoutError("no confirm"))
    unconfirmed.idempotency_key = TASK_ID  # what TaskClient.submit sets when the client sent no key
    task_client.fail("submit", unconfirmed)
    response = client.post("/tasks", json=ADD)
    assert response.status_code == 504
    error = response.get_json()["error"]
    assert set(error) == {"code", "task_id", "idempotency_key", "message"}
    assert error["code"] == "publish_unconfirmed" and error["task_id"] == TASK_ID
    assert error["idempotency_key"] == TASK_ID
    assert error["message"] == (
        f"the broker did not confirm task {TASK_ID} in time: it may or may not be queued. To make sure it runs "
        f"(once), repeat the same request with the header Idempotency-Key: {TASK_ID} until it is answered 200 or 202"
    )
    assert response.headers["Location"] == f"/tasks/{TASK_ID}"
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)


def test_an_unconfirmed_retry_is_504_saying_to_repeat_the_retry(client, task_client):
    failed = task_client.add(state="FAILURE")
    unconfirmed = PublishUnconfirmed(TASK_ID, TimeoutError("no confirm"))
    unconfirmed.retry_of = failed
    task_client.fail("retry", unconfirmed)
    response = client.post(f"/tasks/{failed}/retry")
    assert response.status_code == 504
    error = response.get_json()["error"]
    assert "idempotency_key" not in error, "a retry is repeated, not resubmitted under a key"
    assert error["task_id"] == TASK_ID
    assert f"repeat POST /tasks/{failed}/retry until it is answered 200 or 202" in error["message"]
    assert response.headers["Location"] == f"/tasks/{TASK_ID}"


def test_too_many_waits_is_503_suggesting_to_poll(client, task_client):
    task_id = task_client.add()
    task_client.fail("wait", TooManyWaits("this process holds 64 waits and streams (API_MAX_WAITS)"))
    response = client.get(f"/tasks/{task_id}?wait=5")
    message = assert_error(response, 503, "too_many_waits")
    assert message == "this process holds 64 waits and streams (API_MAX_WAITS); retry later, or poll without ?wait="
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)


@pytest.mark.parametrize(
    ("route", "method"),
    [("/tasks", "get"), ("/tasks/{id}?wait=1", "get"), ("/tasks/{id}/events", "get"), ("/tasks/{id}/retry", "post")],
)
def test_what_needs_redis_is_501_on_the_embedded_store(client, task_client, route, method):
    task_id = task_client.add(state="FAILURE")
    needs = RedisRequired("this needs Redis as the result store")
    for call in ("list_tasks", "wait", "watch", "retry"):
        task_client.fail(call, needs)
    response = getattr(client, method)(route.format(id=task_id))
    assert assert_error(response, 501, "not_implemented") == "this needs Redis as the result store"
    assert "Retry-After" not in response.headers, "no point retrying: it never will"


def test_a_bug_is_a_500_that_tells_nothing_of_the_internals(client, task_client, caplog):
    task_client.fail("submit", KeyError("secret internal detail"))
    response = client.post("/tasks", json=ADD)
    message = assert_error(response, 500, "internal_error")
    assert message == "internal error; see the server log"
    assert "secret internal detail" not in response.get_data(as_text=True)
    assert "secret internal detail" in caplog.text, "the log has it"


def test_a_wrong_method_is_405_naming_the_allowed_ones(client):
    response = client.put("/tasks")
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}
    response = client.post(f"/tasks/{uuid.uuid4()}")
    assert_error(response, 405, "method_not_allowed")
    assert "DELETE" in response.headers["Allow"] and "POST" not in response.headers["Allow"]


# A fixed id: pytest-xdist's workers must all collect the same test names.
@pytest.mark.parametrize(
    "path", ["/nowhere", "/tasks/", "/task", "/TASKS", "/tasks/3f0c9b1e-6a2d-4c8e-9b7f-1d2e3c4b5a69/nothing"]
)
def test_an_unknown_route_is_404_in_the_same_shape(client, path):
    assert_error(client.get(path), 404, "not_found")
