"""Who may do what: bearer tokens guard /tasks*, in two scopes; the rest stays open; no token, no start.

API_TOKENS may do anything under /tasks*; API_READ_TOKENS may only read
(GET, HEAD, OPTIONS) and get 403 insufficient_scope on anything that
changes state.  ``API_AUTH=off`` is the explicit choice of an open API.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from api import auth
from tests.answers import assert_error
from workqueue.settings import Settings, SettingsError

# Fixed values: parameters built from them name tests, and pytest-xdist's
# workers must all collect the same names.
TOKENS = ("first-token-0d5c7f2e9a4b4c1e8f3a6b7d2c9e0f14", "second-token-7a1e4b9c3d2f4e6a8b0c5d7e9f1a2b3c")
READ_TOKEN = "read-token-5e2b8d4f6a1c4e9b8d7f3a2c1e0b9d8f"
TASK_ID = "3f0c9b1e-6a2d-4c8e-9b7f-1d2e3c4b5a69"
ADD = {"task": "add", "args": [1, 2]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(make_app):
    """The API as deployed: auth on, two full tokens and a read-only one; its test client."""
    return make_app(api_auth="required", api_tokens=TOKENS, api_read_tokens=(READ_TOKEN,)).test_client()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/tasks"), ("get", "/tasks"), ("get", f"/tasks/{TASK_ID}"), ("delete", "/tasks/x"),
        ("post", f"/tasks/{TASK_ID}/retry"), ("get", f"/tasks/{TASK_ID}/events"),
        ("post", "/tasks/bulk/retry"), ("get", "/tasks/bulk/actions"), ("get", "/tasks/nothing/here"),
    ],
)  # fmt: skip
def test_tasks_routes_need_a_token(secured, task_client, method, path):
    response = getattr(secured, method)(path, json=ADD)
    message = assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="workqueue"'
    assert message.startswith("no token: send Authorization: Bearer <token>")
    assert task_client.calls == [], "refused before anything is read or changed"


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("Bearer wrong", "this bearer token is not accepted"),
        (f"Bearer {TOKENS[0]}x", "this bearer token is not accepted"),
        (f"Bearer {TOKENS[0][:-1]}", "this bearer token is not accepted"),
        (f"Basic {TOKENS[0]}", "not a bearer token"),
        (f"Token {TOKENS[0]}", "not a bearer token"),
        ("Bearer ", "holds no token"),
        ("Bearer", "holds no token"),
    ],
)
def test_a_wrong_token_or_scheme_is_401_and_says_which(secured, task_client, header, says):
    response = secured.post("/tasks", json=ADD, headers={"Authorization": header})
    message = assert_error(response, 401, "unauthorized")
    assert says in message
    assert TOKENS[0][:-1] not in message and "wrong" not in message, "the message never echoes what was sent"
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="workqueue"')
    assert task_client.calls == []


def test_a_token_that_was_sent_is_challenged_as_invalid(secured):
    response = secured.get("/tasks", headers=bearer("wrong-token-0000000000"))
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="workqueue", error="invalid_token"'


@pytest.mark.parametrize("token", TOKENS)
def test_each_full_token_may_submit_and_the_scheme_is_case_insensitive(secured, token):
    assert secured.post("/tasks", json=ADD, headers=bearer(token)).status_code == 202
    assert secured.post("/tasks", json=ADD, headers={"Authorization": f"bearer  {token} "}).status_code == 202


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/catalogue"])
def test_probes_metrics_the_catalogue_and_the_document_stay_open(secured, path):
    assert secured.get(path).status_code == 200


def test_a_read_only_token_reads_everything_under_tasks(secured, task_client):
    task_id = task_client.add()
    for path in ("/tasks", f"/tasks/{task_id}", f"/tasks/{task_id}?wait=1", "/tasks?state=PENDING&limit=5",
                 f"/tasks/{task_id}/events?timeout=1", "/tasks/bulk/actions"):  # fmt: skip
        response = secured.get(path, headers=bearer(READ_TOKEN))
        assert response.status_code == 200, (path, response.get_data(as_text=True))
    assert secured.head("/tasks", headers=bearer(READ_TOKEN)).status_code == 200
    assert secured.options("/tasks", headers=bearer(READ_TOKEN)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/tasks"), ("delete", "/tasks/{id}"), ("post", "/tasks/{id}/retry"), ("put", "/tasks"),
        ("patch", "/tasks/{id}"), ("post", "/tasks/bulk/retry"), ("post", "/tasks/bulk/revoke"),
    ],
)  # fmt: skip
def test_a_read_only_token_gets_403_on_anything_that_changes_state(secured, task_client, method, path):
    task_id = task_client.add(state="FAILURE")
    response = getattr(secured, method)(path.format(id=task_id), json=ADD, headers=bearer(READ_TOKEN))
    message = assert_error(response, 403, "insufficient_scope")
    assert message == f"this token may only read (GET); {method.upper()} needs a token of API_TOKENS"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="workqueue", error="insufficient_scope"'
    assert task_client.calls == [] and task_client.revoked == []


def test_the_same_requests_with_a_full_token_go_through(secured, task_client):
    task_id = task_client.add()
    assert secured.delete(f"/tasks/{task_id}", headers=bearer(TOKENS[1])).status_code == 202
    assert task_client.revoked == [task_id]


def test_who_acted_is_the_tokens_fingerprint_or_anonymous(secured, client, task_client):
    secured.post("/tasks/bulk/revoke", json={"task": "sleep"}, headers=bearer(TOKENS[0]))
    client.post("/tasks/bulk/revoke", json={"task": "sleep"})
    bulk = [a for a in secured.application.extensions["workqueue-bulk"].calls if a[0] == "revoke_queued"]
    assert bulk[0][1]["who"] == f"token {auth.fingerprint(TOKENS[0])}"
    (open_call,) = client.application.extensions["workqueue-bulk"].calls
    assert open_call[1]["who"] == "anonymous (API_AUTH=off)"


def test_an_open_api_needs_no_token_and_ignores_one(client):
    assert client.post("/tasks", json=ADD).status_code == 202
    assert client.post("/tasks", json=ADD, headers=bearer("anything-at-all-00000")).status_code == 202


def test_an_api_with_auth_on_and_no_usable_token_refuses_to_start(make_app):
    # Blank entries are no tokens: API_TOKENS="," or " " from an unset shell variable.
    settings = Settings.from_env({"API_TOKENS": " , ,", "API_READ_TOKENS": ""})
    assert settings.api_auth == "required" and settings.api_tokens == () and settings.api_read_tokens == ()
    with pytest.raises(SettingsError, match="API_AUTH is required but API_TOKENS and API_READ_TOKENS hold no token"):
        make_app(api_auth="required", api_tokens=(), api_read_tokens=())
    # The same settings with an explicit API_AUTH=off: open, by choice.
    assert make_app(api_auth="off", api_tokens=()).test_client().get("/tasks").status_code == 200


def test_read_tokens_alone_are_enough_to_start(make_app):
    read_only = make_app(api_auth="required", api_tokens=(), api_read_tokens=(READ_TOKEN,)).test_client()
    assert read_only.get("/tasks", headers=bearer(READ_TOKEN)).status_code == 200
    assert read_only.post("/tasks", json=ADD, headers=bearer(READ_TOKEN)).status_code == 403


def test_the_document_says_tasks_need_a_bearer_token(secured, client):
    document = secured.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            if path.startswith("/tasks"):
                assert operation["security"] == [{"bearer": []}] and "401" in operation["responses"], (path, method)
                assert ("403" in operation["responses"]) == (method != "get"), (path, method)
            else:
                assert "security" not in operation and "401" not in operation["responses"], (path, method)
    assert "securitySchemes" not in client.get("/openapi.json").get_json()["components"], "an open API says so"


# -- the tokens themselves ---------------------------------------------------------------


def test_a_fingerprint_is_what_sha256sum_prints_and_never_the_token():
    token = TOKENS[0]
    assert auth.fingerprint(token) == "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]
    assert token not in auth.fingerprint(token)


def test_scopes_are_found_for_every_token_and_none_for_anything_else(settings):
    tokens = auth.Tokens(
        dataclasses.replace(settings, api_auth="required", api_tokens=TOKENS, api_read_tokens=(READ_TOKEN,))
    )
    assert [tokens.scope_of(t) for t in TOKENS] == [auth.FULL, auth.FULL]
    assert tokens.scope_of(READ_TOKEN) == auth.READ
    assert tokens.scope_of("") is None and tokens.scope_of(TOKENS[0].upper()) is None
    assert tokens.fingerprints == {auth.fingerprint(TOKENS[0]): "full", auth.fingerprint(TOKENS[1]): "full",
                                   auth.fingerprint(READ_TOKEN): "read"}  # fmt: skip


def test_the_derived_secret_changes_with_the_set_of_tokens_and_the_purpose(settings):
    def secret(full, read=(), purpose=b"dashboard-session"):
        return auth.Tokens(dataclasses.replace(settings, api_tokens=full, api_read_tokens=read)).secret(purpose)

    assert secret(TOKENS) == secret(TOKENS[::-1]), "the same Secret in every replica, whatever the order"
    assert secret(TOKENS) != secret(TOKENS[:1])
    assert secret(TOKENS) != secret(TOKENS, (READ_TOKEN,))
    assert secret(TOKENS) != secret(TOKENS, purpose=b"another-purpose")
    assert len(secret(TOKENS)) == 32
