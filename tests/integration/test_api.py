"""The HTTP contract against the real RabbitMQ and Redis, in-process (Flask test client).

What the API answers without reaching a store (validation, malformed
bodies, methods, the catalogue and the document) is tests/unit/; here is
what needs the servers: an accepted task is then known, an id never
submitted is unknown to Redis, and the probes and metrics see both.
"""

from __future__ import annotations

import re
import uuid

import pytest
from celery import states

from tests.answers import assert_error

pytestmark = pytest.mark.integration


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
