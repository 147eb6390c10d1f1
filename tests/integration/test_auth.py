"""Who may submit: bearer tokens guard /tasks*, with two scopes; probes, metrics and the document stay open.

API_TOKENS may do anything under /tasks*; API_READ_TOKENS may only read
(GET), and get 403 insufficient_scope on anything that changes state.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import requests

from api.app import create_app
from testing.processes import Api
from testing.servers import wait_until
from workqueue.settings import Settings, SettingsError

pytestmark = pytest.mark.integration

TOKENS = ("first-token-" + uuid.uuid4().hex, "second-token-" + uuid.uuid4().hex)
READ_TOKEN = "read-token-" + uuid.uuid4().hex


@pytest.fixture
def http(broker_url, backend_url, make_settings):
    settings = make_settings(
        broker_url, backend_url, api_auth="required", api_tokens=TOKENS, api_read_tokens=(READ_TOKEN,)
    )
    app = create_app(settings, TESTING=True)
    yield app.test_client()
    app.extensions["workqueue"].close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/tasks"), ("get", "/tasks"), ("get", f"/tasks/{uuid.uuid4()}"), ("delete", "/tasks/x")],
)
def test_tasks_routes_need_a_token(http, method, path):
    response = getattr(http, method)(path, json={"task": "add", "args": [1, 2]})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="workqueue"'
    assert response.get_json()["error"]["message"].startswith("no token: send Authorization: Bearer <token>")


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("Bearer wrong", "this bearer token is not accepted"),
        (f"Bearer {TOKENS[0]}x", "this bearer token is not accepted"),
        (f"Basic {TOKENS[0]}", "not a bearer token"),
        ("Bearer ", "holds no token"),
    ],
)
def test_a_wrong_token_or_scheme_is_401_and_says_which(http, header, says):
    response = http.post("/tasks", json={"task": "add", "args": [1, 2]}, headers={"Authorization": header})
    assert response.status_code == 401
    message = response.get_json()["error"]["message"]
    assert says in message
    assert TOKENS[0] not in message and "wrong" not in message, "the message never echoes what was sent"


def test_each_configured_token_is_accepted(http):
    for token in TOKENS:
        response = http.post(
            "/tasks", json={"task": "add", "args": [1, 2]}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 202, response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/catalogue"])
def test_probes_metrics_the_catalogue_and_the_document_stay_open(http, path):
    assert http.get(path).status_code == 200


def test_a_read_only_token_reads_everything_under_tasks(http):
    task_id = http.post("/tasks", json={"task": "add", "args": [1, 2]}, headers=bearer(TOKENS[0])).get_json()["id"]
    for path in ("/tasks", f"/tasks/{task_id}", f"/tasks/{task_id}?wait=0", "/tasks?state=PENDING&limit=5"):
        response = http.get(path, headers=bearer(READ_TOKEN))
        assert response.status_code == 200, (path, response.get_data(as_text=True))
    events = http.get(f"/tasks/{task_id}/events?timeout=1", headers=bearer(READ_TOKEN))
    assert events.status_code == 200 and events.mimetype == "text/event-stream"
    assert http.get(f"/tasks/{uuid.uuid4()}", headers=bearer(READ_TOKEN)).status_code == 404
    assert http.head("/tasks", headers=bearer(READ_TOKEN)).status_code == 200


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
def test_a_read_only_token_gets_403_on_anything_that_changes_state(http, method, path):
    task_id = http.post("/tasks", json={"task": "add", "args": [1, 2]}, headers=bearer(TOKENS[1])).get_json()["id"]
    response = getattr(http, method)(
        path.format(id=task_id), json={"task": "add", "args": [1, 2]}, headers=bearer(READ_TOKEN)
    )
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "insufficient_scope"
    assert "may only read" in error["message"] and "API_TOKENS" in error["message"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="workqueue", error="insufficient_scope"'
    # Nothing changed: the task is still there, not revoked, not retried.
    view = http.get(f"/tasks/{task_id}", headers=bearer(TOKENS[1])).get_json()
    assert "retried_by" not in view and view["state"] != "REVOKED"


def test_the_same_requests_with_a_full_token_go_through(http):
    task_id = http.post("/tasks", json={"task": "add", "args": [1, 2]}, headers=bearer(TOKENS[0])).get_json()["id"]
    assert http.delete(f"/tasks/{task_id}", headers=bearer(TOKENS[0])).status_code in (202, 409)


def test_an_api_with_auth_on_and_no_usable_token_refuses_to_start(broker_url, backend_url, make_settings):
    # Blank entries are no tokens: API_TOKENS="," or " " from an unset shell variable.
    settings = Settings.from_env(
        {"BROKER_URL": broker_url, "RESULT_BACKEND": backend_url, "API_TOKENS": " , ,", "API_READ_TOKENS": ""}
    )
    assert settings.api_auth == "required" and settings.api_tokens == ()
    with pytest.raises(SettingsError, match="API_AUTH is required but API_TOKENS and API_READ_TOKENS hold no token"):
        create_app(settings, TESTING=True)
    # The same settings with an explicit API_AUTH=off: open, by choice.
    app = create_app(dataclasses.replace(settings, api_auth="off"), TESTING=True)
    try:
        assert app.test_client().get("/tasks").status_code == 200
    finally:
        app.extensions["workqueue"].close()


def test_the_document_says_tasks_need_a_bearer_token(http):
    document = http.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/tasks"]["post"]["security"] == [{"bearer": []}]
    assert "403" in document["paths"]["/tasks"]["post"]["responses"]
    assert "403" not in document["paths"]["/tasks"]["get"]["responses"]
    assert "security" not in document["paths"]["/healthz"]["get"]


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
