"""/openapi.json: every route the API serves, what each accepts, and every answer it gives.

The fuzz test (tests/integration/test_fuzz.py) trusts this document; these
tests keep it honest: its paths and methods are the app's, its bounds the
views' own, its submission schema accepts exactly what POST /tasks accepts,
and each status a route answers is listed for that route.
"""

from __future__ import annotations

import random
import re
import tomllib
import uuid

import pytest
from jsonschema import Draft202012Validator

from api import bulk, limits
from cli.submit_tasks import EXAMPLES
from testing.processes import REPO
from workqueue.catalogue import ValidationFailed
from workqueue.client import DependencyUnavailable, IdempotencyConflict, RedisRequired, RetryRefused, TooManyWaits
from workqueue.publisher import PublishUnconfirmed

READ_ONLY_METHODS = {"HEAD", "OPTIONS"}  # Flask adds them; the document lists what a client does


@pytest.fixture
def document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def submission_validator(document):
    schema = document["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return Draft202012Validator(schema)


def test_it_is_openapi_3_1_of_this_release(document):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert document["openapi"] == "3.1.0" and document["info"]["version"] == version


def test_every_route_and_method_the_api_serves_is_documented_and_nothing_else(app, document):
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/dashboard") or rule.endpoint == "static":
            continue  # the browser's pages (tests/unit/test_dashboard_access.py) and Flask's static files
        path = rule.rule.replace("<", "{").replace(">", "}")
        served.setdefault(path, set()).update(m.lower() for m in rule.methods - READ_ONLY_METHODS)
    documented = {path: set(ops) - {"parameters"} for path, ops in document["paths"].items()}
    assert served == documented
    assert len(documented) == 12


def test_every_reference_resolves_and_every_error_has_the_error_shape(document):
    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    schemas = document["components"]["schemas"]
    found = set(refs(document))
    assert found and all(ref.removeprefix("#/components/schemas/") in schemas for ref in found)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for status, answer in operation["responses"].items():
                if int(status) >= 400 and path != "/readyz":  # the probe's 503 is its report, not an error
                    content = answer["content"]["application/json"]
                    assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (path, method, status)
    assert schemas["Error"]["properties"]["error"]["required"] == ["code", "message"]


def test_the_bounds_it_states_are_the_ones_the_views_enforce(document, task_client):
    paths = document["paths"]
    query = {p["name"]: p["schema"] for p in paths["/tasks"]["get"]["parameters"]}
    assert query["state"]["enum"] == list(limits.LISTED_STATES)
    assert query["task"]["enum"] == sorted(task_client.catalogue)
    assert (query["limit"]["minimum"], query["limit"]["maximum"]) == (1, limits.MAX_LIMIT)
    (wait,) = paths["/tasks/{task_id}"]["get"]["parameters"]
    assert (wait["schema"]["minimum"], wait["schema"]["maximum"]) == (0, limits.MAX_WAIT_SECONDS)
    (timeout,) = paths["/tasks/{task_id}/events"]["get"]["parameters"]
    assert (timeout["schema"]["minimum"], timeout["schema"]["maximum"]) == (1, limits.MAX_EVENTS_SECONDS)
    (log_limit,) = paths["/tasks/bulk/actions"]["get"]["parameters"]
    assert log_limit["schema"]["maximum"] == bulk.LOG_LIMIT
    assert str(limits.MAX_BODY_BYTES) in paths["/tasks"]["post"]["responses"]["413"]["description"]
    (key,) = paths["/tasks"]["post"]["parameters"]
    assert key["name"] == "Idempotency-Key" and key["schema"]["pattern"] == "^(?!schedule:|batch:)[ -~]{1,200}$"
    for action, since_required in (("retry", True), ("revoke", False)):
        schema = paths[f"/tasks/bulk/{action}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert ("since" in schema["required"]) == since_required
        assert schema["properties"]["limit"]["maximum"] == bulk.MAX_LIMIT
        assert schema["properties"]["task"]["enum"] == sorted(task_client.catalogue)


@pytest.mark.parametrize(
    ("key", "taken"),
    [("x", True), ("Schedule:upper-case", True), ("a:schedule:", True), ("x" * 200, True),
     ("schedule:nightly", False), ("batch:0b7f", False), ("", False), ("x" * 201, False), ("tab\there", False)],
)  # fmt: skip
def test_the_documented_idempotency_key_is_exactly_what_the_api_takes(document, client, key, taken):
    """A fuzzer generating keys from the pattern found a reserved one the API refused (schemathesis ST202)."""
    (parameter,) = document["paths"]["/tasks"]["post"]["parameters"]
    assert bool(re.search(parameter["schema"]["pattern"], key)) == taken
    response = client.post("/tasks", json={"task": "add", "args": [1, 2]}, headers={"Idempotency-Key": key})
    assert (response.status_code == 202) == taken, response.get_data(as_text=True)


def test_each_task_is_documented_with_its_two_plain_forms(document, task_client):
    variants = submission_validator(document).schema["oneOf"]
    assert sorted(v["title"] for v in variants) == sorted(
        f"{name} ({form})" for name in task_client.catalogue for form in ("args", "kwargs")
    )


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_what_the_document_accepts_the_api_accepts_and_the_other_way_round(client, document, task_client, name):
    validator = submission_validator(document)
    kwargs = EXAMPLES[name](random.Random(7))
    args = [kwargs[param] for param in task_client.catalogue[name].params]
    for body in ({"task": name, "kwargs": kwargs}, {"task": name, "args": args}):
        assert validator.is_valid(body), body
        assert client.post("/tasks", json=body).status_code == 202, body
    wrong = {param: {"an": "object"} for param in kwargs}  # no task takes one
    extra = {**kwargs, "unexpected": 1}
    for body in ({"task": name, "kwargs": wrong}, {"task": name, "kwargs": extra}, {"task": name, "args": [*args, 1]}):
        assert not validator.is_valid(body), body
        assert client.post("/tasks", json=body).status_code == 422, body


TASK = str(uuid.uuid4())


def unconfirmed(**fields):
    exc = PublishUnconfirmed(TASK, TimeoutError("no confirm"))
    for name, value in fields.items():
        setattr(exc, name, value)
    return exc


DOWN = DependencyUnavailable("broker", OSError("refused"))
NO_REDIS = RedisRequired("needs Redis")
REUSED = IdempotencyConflict("mismatch", TASK)
TEXT = object()  # a body sent as text/plain
SINCE_2026 = {"task": "flaky", "since": "2026-01-01"}
# (status, method, path as documented and its query, body, headers, the stand-in's failure, the state of the task TASK)
ANSWERS = [
    (202, "post", "/tasks", {"task": "add", "args": [1, 2]}, {}, None, None),
    (200, "post", "/tasks", {"task": "add", "args": [1, 2]}, {"Idempotency-Key": "k"}, ("sent before", None), None),
    (400, "post", "/tasks", "{", {}, None, None),
    (400, "post", "/tasks", {"task": "add"}, {"Idempotency-Key": "batch:1"}, None, None),
    (409, "post", "/tasks", {"task": "add", "args": [1, 2]}, {"Idempotency-Key": "k"}, ("submit_once", REUSED), None),
    (413, "post", "/tasks", "x" * (limits.MAX_BODY_BYTES + 1), {}, None, None),
    (415, "post", "/tasks", TEXT, {}, None, None),
    (422, "post", "/tasks", {"task": "nope"}, {}, None, None),
    (503, "post", "/tasks", {"task": "add", "args": [1, 2]}, {}, ("submit", DOWN), None),
    (504, "post", "/tasks", {"task": "add", "args": [1, 2]}, {}, ("submit", unconfirmed(idempotency_key=TASK)), None),
    (200, "get", "/tasks", None, {}, None, None),
    (400, "get", "/tasks?cursor=x", None, {}, None, None),
    (422, "get", "/tasks?limit=0", None, {}, None, None),
    (501, "get", "/tasks", None, {}, ("list_tasks", NO_REDIS), None),
    (503, "get", "/tasks", None, {}, ("list_tasks", DOWN), None),
    (200, "get", "/tasks/{task_id}", None, {}, None, "PENDING"),
    (404, "get", "/tasks/{task_id}", None, {}, None, None),
    (422, "get", "/tasks/{task_id}?wait=99", None, {}, None, "PENDING"),
    (501, "get", "/tasks/{task_id}?wait=1", None, {}, ("wait", NO_REDIS), "PENDING"),
    (503, "get", "/tasks/{task_id}?wait=1", None, {}, ("wait", TooManyWaits("64 waits")), "PENDING"),
    (202, "delete", "/tasks/{task_id}", None, {}, None, "PENDING"),
    (404, "delete", "/tasks/{task_id}", None, {}, None, None),
    (409, "delete", "/tasks/{task_id}", None, {}, None, "SUCCESS"),
    (503, "delete", "/tasks/{task_id}", None, {}, ("revoke", DOWN), "PENDING"),
    (200, "get", "/tasks/{task_id}/events", None, {}, None, "SUCCESS"),
    (404, "get", "/tasks/{task_id}/events", None, {}, None, None),
    (422, "get", "/tasks/{task_id}/events?timeout=0", None, {}, None, "PENDING"),
    (501, "get", "/tasks/{task_id}/events", None, {}, ("watch", NO_REDIS), "PENDING"),
    (503, "get", "/tasks/{task_id}/events", None, {}, ("watch", TooManyWaits("64")), "PENDING"),
    (202, "post", "/tasks/{task_id}/retry", None, {}, None, "FAILURE"),
    (404, "post", "/tasks/{task_id}/retry", None, {}, None, None),
    (409, "post", "/tasks/{task_id}/retry", None, {}, None, "SUCCESS"),
    (409, "post", "/tasks/{task_id}/retry", None, {}, ("retry", RetryRefused("already_retried", "x")), "FAILURE"),
    (422, "post", "/tasks/{task_id}/retry", None, {}, ("retry", ValidationFailed("invalid_arguments", "x")), "FAILURE"),
    (501, "post", "/tasks/{task_id}/retry", None, {}, ("retry", NO_REDIS), "FAILURE"),
    (503, "post", "/tasks/{task_id}/retry", None, {}, ("retry", DOWN), "FAILURE"),
    (504, "post", "/tasks/{task_id}/retry", None, {}, ("retry", unconfirmed(retry_of=TASK)), "FAILURE"),
    (200, "post", "/tasks/bulk/retry", {"task": "flaky", "since": "2026-01-01"}, {}, None, None),
    (400, "post", "/tasks/bulk/retry", {"task": "flaky", "since": "2026-01-01", "cursor": "x"}, {}, None, None),
    (413, "post", "/tasks/bulk/retry", "x" * (limits.MAX_BODY_BYTES + 1), {}, None, None),
    (415, "post", "/tasks/bulk/retry", TEXT, {}, None, None),
    (422, "post", "/tasks/bulk/retry", {"task": "flaky"}, {}, None, None),
    (501, "post", "/tasks/bulk/retry", SINCE_2026, {}, ("bulk.retry_failed", NO_REDIS), None),
    (503, "post", "/tasks/bulk/retry", SINCE_2026, {}, ("bulk.retry_failed", DOWN), None),
    (504, "post", "/tasks/bulk/retry", SINCE_2026, {}, ("bulk.retry_failed", unconfirmed(retry_of=TASK)), None),
    (200, "post", "/tasks/bulk/revoke", {"task": "sleep"}, {}, None, None),
    (400, "post", "/tasks/bulk/revoke", {"task": "sleep", "cursor": "x"}, {}, None, None),
    (413, "post", "/tasks/bulk/revoke", "x" * (limits.MAX_BODY_BYTES + 1), {}, None, None),
    (415, "post", "/tasks/bulk/revoke", TEXT, {}, None, None),
    (422, "post", "/tasks/bulk/revoke", {"task": "nope"}, {}, None, None),
    (501, "post", "/tasks/bulk/revoke", {"task": "sleep"}, {}, ("bulk.revoke_queued", NO_REDIS), None),
    (503, "post", "/tasks/bulk/revoke", {"task": "sleep"}, {}, ("bulk.revoke_queued", DOWN), None),
    (200, "get", "/tasks/bulk/actions", None, {}, None, None),
    (422, "get", "/tasks/bulk/actions?limit=0", None, {}, None, None),
    (501, "get", "/tasks/bulk/actions", None, {}, ("bulk.log", NO_REDIS), None),
    (503, "get", "/tasks/bulk/actions", None, {}, ("bulk.log", DOWN), None),
    (200, "get", "/catalogue", None, {}, None, None),
    (200, "get", "/healthz", None, {}, None, None),
    (200, "get", "/readyz", None, {}, None, None),
    (503, "get", "/readyz", None, {}, ("readiness", ({"broker": "unavailable: OSError"}, {})), None),
    (200, "get", "/metrics", None, {}, None, None),
    (200, "get", "/openapi.json", None, {}, None, None),
]  # fmt: skip


@pytest.mark.parametrize(("status", "method", "where", "body", "headers", "failure", "state"), ANSWERS)
def test_every_answer_a_route_gives_is_documented_for_it(
    app, client, task_client, document, status, method, where, body, headers, failure, state
):
    route, path = where.split("?")[0], where.format(task_id=TASK)
    if state is not None:
        task_client.add(state=state)
        task_client.views[TASK] = {**task_client.views.popitem()[1], "id": TASK}
        task_client.records[TASK] = {"task": "add", "kwargs": {"x": 1, "y": 2}}
    if failure is not None:
        target, cause = failure
        if target == "sent before":
            client.post(path, json=body, headers=headers)
        elif target == "readiness":
            task_client.readiness = cause
        elif target.startswith("bulk."):
            app.extensions["workqueue-bulk"].fail(target.removeprefix("bulk."), cause)
        else:
            task_client.fail(target, cause)
    if body is TEXT:
        response = getattr(client, method)(path, data="{}", content_type="text/plain")
    elif isinstance(body, str):
        response = getattr(client, method)(path, data=body, content_type="application/json", headers=headers)
    else:
        response = getattr(client, method)(path, json=body, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)
    assert str(status) in document["paths"][route][method]["responses"]


def test_the_statuses_above_cover_every_documented_one(document):
    """The table above is complete: no documented answer goes unprovoked (but 401/403, in test_api_auth.py)."""
    provoked: dict[tuple[str, str], set[str]] = {}
    for status, method, where, *_ in ANSWERS:
        provoked.setdefault((where.split("?")[0], method), set()).add(str(status))
    documented = {
        (path, method): set(operation["responses"]) - {"401", "403"}
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if method != "parameters"
    }
    # bulk/revoke shares bulk/retry's answers in the document; a revoke publishes nothing, so it never answers 504.
    documented[("/tasks/bulk/revoke", "post")].discard("504")
    assert provoked == documented
