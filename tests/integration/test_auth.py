"""Who may submit, against the real servers: each token's requests go through, a read-only one changes nothing.

API_TOKENS may do anything under /tasks*; API_READ_TOKENS may only read
(GET), and get 403 insufficient_scope on anything that changes state.  The
decisions themselves (401 and its reasons, 403, what stays open, no token
no start, the document's security) are tests/unit/test_api_auth.py; here
the accepted requests reach RabbitMQ and Redis, a refused one leaves the
task as it was, and no token reaches gunicorn's log.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from testing.processes import Api
from testing.servers import wait_until

pytestmark = pytest.mark.integration

TOKENS = ("first-token-" + uuid.uuid4().hex, "second-token-" + uuid.uuid4().hex)
READ_TOKEN = "read-token-" + uuid.uuid4().hex


@pytest.fixture
def app(servers, app_for):
    """The API as deployed: auth on, two full tokens and a read-only one."""
    return app_for(*servers, api_auth="required", api_tokens=TOKENS, api_read_tokens=(READ_TOKEN,))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_each_configured_token_is_accepted(client):
    for token in TOKENS:
        response = client.post(
            "/tasks", json={"task": "add", "args": [1, 2]}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 202, response.get_data(as_text=True)


def test_a_read_only_token_reads_everything_under_tasks(client):
    task_id = client.post("/tasks", json={"task": "add", "args": [1, 2]}, headers=bearer(TOKENS[0])).get_json()["id"]
    for path in ("/tasks", f"/tasks/{task_id}", f"/tasks/{task_id}?wait=0", "/tasks?state=PENDING&limit=5"):
        response = client.get(path, headers=bearer(READ_TOKEN))
        assert response.status_code == 200, (path, response.get_data(as_text=True))
    events = client.get(f"/tasks/{task_id}/events?timeout=1", headers=bearer(READ_TOKEN))
    assert events.status_code == 200 and events.mimetype == "text/event-stream"
    assert client.get(f"/tasks/{uuid.uuid4()}", headers=bearer(READ_TOKEN)).status_code == 404
    assert client.head("/tasks", headers=bearer(READ_TOKEN)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/tasks"),
        ("delete", "/tasks/{id}"),
        ("post", "/tasks/{id}/retry"),
        ("put", "/tasks"),
        ("patch", "/tasks/{id}"),
    ],
)
def test_a_read_only_token_gets_403_on_anything_that_changes_state(client, method, path):
    task_id = client.post("/tasks", json={"task": "add", "args": [1, 2]}, headers=bearer(TOKENS[1])).get_json()["id"]
    response = getattr(client, method)(
        path.format(id=task_id), json={"task": "add", "args": [1, 2]}, headers=bearer(READ_TOKEN)
    )
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "insufficient_scope"
    assert "may only read" in error["message"] and "API_TOKENS" in error["message"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="workqueue", error="insufficient_scope"'
    # Nothing changed: the task is still there, not revoked, not retried.
    view = client.get(f"/tasks/{task_id}", headers=bearer(TOKENS[1])).get_json()
    assert "retried_by" not in view and view["state"] != "REVOKED"


def test_the_same_requests_with_a_full_token_go_through(client):
    task_id = client.post("/tasks", json={"task": "add", "args": [1, 2]}, headers=bearer(TOKENS[0])).get_json()["id"]
    assert client.delete(f"/tasks/{task_id}", headers=bearer(TOKENS[0])).status_code in (202, 409)


def test_tokens_never_reach_the_logs(broker_url, backend_url):
    api = Api(broker_url, backend_url, API_TOKENS=",".join(TOKENS), API_ACCESS_LOG="-").start()
    try:
        api.wait_ready()
        for header in (f"Bearer {TOKENS[0]}", f"Bearer {TOKENS[1]}-wrong"):
            requests.post(
                f"{api.url}/tasks", json={"task": "add", "args": [1, 2]}, headers={"Authorization": header}, timeout=10
            )

        def both_logged() -> bool:  # the access log is on, and written a moment after the answer
            log = (api.dir / "api.log").read_text()
            return '"POST /tasks HTTP/1.1" 202' in log and '"POST /tasks HTTP/1.1" 401' in log

        wait_until(both_logged, 10, "both requests in the access log")
        log = (api.dir / "api.log").read_text()
        assert TOKENS[0] not in log and TOKENS[1] not in log
    finally:
        api.stop()
