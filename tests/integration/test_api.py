"""The HTTP contract, in-process (Flask test client) against the real RabbitMQ and Redis.

Every client mistake gets a 4xx in the documented error shape, never a 5xx.
"""

from __future__ import annotations

import re
import uuid

import pytest
from celery import states

from api.app import create_app
from api.limits import MAX_BODY_BYTES
from workqueue.client import TaskClient

pytestmark = pytest.mark.integration


@pytest.fixture
def client(broker_url, backend_url, make_settings):
    app = create_app(make_settings(broker_url, backend_url), TESTING=True)
    yield app.test_client()
    app.extensions["workqueue"].close()


def assert_error(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["message"]


def test_submit_returns_202_with_location_and_the_task_is_then_known(client):
    response = client.post("/tasks", json={"task": "add", "args": [2, 3]})
    assert response.status_code == 202
    body = response.get_json()
    assert body["task"] == "add" and body["state"] == states.PENDING
    assert response.headers["Location"] == f"/tasks/{body['id']}"
    view = client.get(response.headers["Location"]).get_json()
    assert view["id"] == body["id"] and view["task"] == "add"
    assert view["state"] in {states.PENDING, states.STARTED, states.SUCCESS}
    assert view["submitted_at"]


def test_unknown_id_is_404(client):
    assert_error(client.get(f"/tasks/{uuid.uuid4()}"), 404, "not_found")
    assert_error(client.get("/tasks/not-a-uuid"), 404, "not_found")
    assert_error(client.delete(f"/tasks/{uuid.uuid4()}"), 404, "not_found")


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
    ],
)
def test_invalid_submissions_are_422(client, body, code, fragment):
    message = assert_error(client.post("/tasks", json=body), 422, code)
    assert fragment in message


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ('{"task": "add"', "application/json", 400, "invalid_json"),
        ('{"task": "add", "args": [NaN, 1]}', "application/json", 400, "invalid_json"),
        ("[" * 100_000 + "]" * 100_000, "application/json", 400, "invalid_json"),
        ('{"task": "pi", "args": [' + "9" * 5000 + "]}", "application/json", 400, "invalid_json"),
        ("\xff\xfe", "application/json", 400, "invalid_json"),
        ('{"task": "add", "args": [1, 2]}', "text/plain", 415, "unsupported_media_type"),
        ("task=add", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("x" * (MAX_BODY_BYTES + 1), "application/json", 413, "request_entity_too_large"),
    ],
)
def test_malformed_bodies_are_refused(client, data, content_type, status, code):
    assert_error(client.post("/tasks", data=data, content_type=content_type), status, code)


def test_wrong_method_and_unknown_route(client):
    response = client.put("/tasks")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
    assert_error(client.get("/nowhere"), 404, "not_found")


def test_catalogue_lists_tasks_with_schemas(client):
    tasks = {t["name"]: t for t in client.get("/catalogue").get_json()["tasks"]}
    assert set(tasks) == {"add", "mul", "xsum", "dump_context", "pi", "sleep", "flaky"}
    assert tasks["pi"]["params"] == ["digits"]
    assert tasks["pi"]["schema"]["properties"]["digits"]["type"] == "integer"


def test_openapi_documents_every_route(client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/tasks", "/tasks/{task_id}", "/tasks/{task_id}/events", "/tasks/{task_id}/retry", "/catalogue",
        "/tasks/bulk/retry", "/tasks/bulk/revoke", "/tasks/bulk/actions",
        "/healthz", "/readyz", "/metrics", "/openapi.json",
    }  # fmt: skip
    # Every route the app serves is in it (the fuzz test covers what the document lists), but the
    # dashboard's pages for browsers (tests/integration/test_dashboard.py covers those).
    served = {rule.rule.replace("<", "{").replace(">", "}") for rule in client.application.url_map.iter_rules()}
    pages = {path for path in served if path.startswith("/dashboard")}
    assert len(pages) > 10
    assert served - pages - {"/static/{path:filename}"} == set(document["paths"])
    variants = document["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {v["title"].split()[0] for v in variants} == {"add", "mul", "xsum", "dump_context", "pi", "sleep", "flaky"}


def test_health_readiness_and_metrics(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"broker": "ok", "result_backend": "ok"}
    posted = client.post("/tasks", json={"task": "mul", "args": [2, 3]})
    assert posted.status_code == 202, posted.get_data(as_text=True)
    text = client.get("/metrics").get_data(as_text=True)
    sent = r'^celery_task_sent_total\{hostname="[^"]*",name="workqueue\.mul",queue_name="celery"\} '
    assert re.search(sent, text, re.M)
    assert 'workqueue_api_requests_total{method="POST",route="/tasks",status="202"}' in text


class _ForgetfulClient(TaskClient):
    """A client whose store has lost a task right after it was accepted (describe finds nothing)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.forgotten: set[str] = set()

    def submit(self, task, kwargs, task_id=None, retry_of=None):
        task_id = super().submit(task, kwargs, task_id=task_id, retry_of=retry_of)
        if retry_of:
            self.forgotten.add(task_id)
        return task_id

    def describe(self, task_id):
        return None if task_id in self.forgotten else super().describe(task_id)


def test_a_retry_answers_202_even_when_the_new_task_cannot_be_read_back(broker_url, backend_url, make_settings):
    """The retry view's fallback (no view of the new task) used to raise KeyError: a 500 for an accepted task."""
    settings = make_settings(broker_url, backend_url)
    app = create_app(settings, client=_ForgetfulClient(settings), TESTING=True)
    http = app.test_client()
    try:
        task_id = http.post("/tasks", json={"task": "add", "args": [2, 3]}).get_json()["id"]
        # What a worker stores when the task fails.
        app.extensions["workqueue"].celery.backend.mark_as_failure(task_id, RuntimeError("failed on purpose"))
        response = http.post(f"/tasks/{task_id}/retry")
        assert response.status_code == 202, response.get_data(as_text=True)
        body = response.get_json()
        assert body["retry_of"] == task_id and body["task"] == "add" and body["state"] == states.PENDING
        assert response.headers["Location"] == f"/tasks/{body['id']}"
    finally:
        app.extensions["workqueue"].close()
