"""Who may submit: bearer tokens (API_TOKENS) guard /tasks*; probes, metrics and the document stay open."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import requests

from api.app import create_app
from testing.processes import Api
from testing.servers import wait_until

pytestmark = pytest.mark.integration

TOKENS = ("first-token-" + uuid.uuid4().hex, "second-token-" + uuid.uuid4().hex)


@pytest.fixture
def http(broker_url, backend_url, make_settings):
    settings = dataclasses.replace(make_settings(broker_url, backend_url), api_tokens=TOKENS)
    app = create_app(settings, TESTING=True)
    yield app.test_client()
    app.extensions["workqueue"].close()


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/tasks"), ("get", "/tasks"), ("get", f"/tasks/{uuid.uuid4()}"), ("delete", "/tasks/x")],
)
def test_tasks_routes_need_a_token(http, method, path):
    response = getattr(http, method)(path, json={"task": "add", "args": [1, 2]})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="workqueue"'


@pytest.mark.parametrize("header", ["Bearer wrong", f"Basic {TOKENS[0]}", f"Bearer {TOKENS[0]}x", "Bearer "])
def test_a_wrong_token_or_scheme_is_401(http, header):
    response = http.post("/tasks", json={"task": "add", "args": [1, 2]}, headers={"Authorization": header})
    assert response.status_code == 401


def test_each_configured_token_is_accepted(http):
    for token in TOKENS:
        response = http.post(
            "/tasks", json={"task": "add", "args": [1, 2]}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 202, response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_probes_metrics_and_the_document_stay_open(http, path):
    assert http.get(path).status_code == 200


def test_the_document_says_tasks_need_a_bearer_token(http):
    document = http.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/tasks"]["post"]["security"] == [{"bearer": []}]
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
