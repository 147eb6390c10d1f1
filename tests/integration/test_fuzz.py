"""Hostile input: schemathesis fuzzes the API from its own /openapi.json.

Positive and negative cases are generated from the document; every
response must be a non-5xx in the documented shape (schemathesis' default
checks: no server error, documented status codes, content type and
response schema).  Every route is fuzzed on an open API (``API_AUTH=off``)
and on one with auth on, by callers with no token (every ``/tasks*``
answer is 401), a full token and a read-only token (403 on anything that
changes state, never on a read).  The run is bounded (a few dozen examples per operation)
and uses a RabbitMQ node of its own with no worker, so fuzzed tasks (say
``sleep(300)``) just queue up and are thrown away with the node.
"""

from __future__ import annotations

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from api.app import create_app
from api.auth import READ_METHODS
from testing import servers
from testing.faults import report
from workqueue.settings import Settings

pytestmark = pytest.mark.integration


FULL_TOKEN = "fuzz-token-" + "0123456789abcdef"
READ_TOKEN = "fuzz-read-token-" + "0123456789abcdef"
CALLERS = {
    "no token": {},
    "full token": {"Authorization": f"Bearer {FULL_TOKEN}"},
    "read-only token": {"Authorization": f"Bearer {READ_TOKEN}"},
}


def fuzzed_app(node_url: str, backend_url: str, runtime: str, secured: bool = False):
    """The app a module's fuzzing shares (module-scoped: the function-scoped app_for cannot serve it)."""
    access = (
        {"api_auth": "required", "api_tokens": (FULL_TOKEN,), "api_read_tokens": (READ_TOKEN,)}
        if secured
        else {"api_auth": "off"}
    )
    settings = Settings(broker_url=node_url, result_backend=backend_url, runtime_dir=runtime, **access)
    return create_app(settings, TESTING=True)


@pytest.fixture(scope="module")
def fuzz_broker():
    with servers.started(servers.RabbitMQ()) as node:
        yield node.url


@pytest.fixture(scope="module")
def api_schema(fuzz_broker, backend_url, tmp_path_factory):
    """The API open to anyone (API_AUTH=off, as ./dev.sh up runs it without a token)."""
    app = fuzzed_app(fuzz_broker, backend_url, str(tmp_path_factory.mktemp("fuzz")))
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    app.extensions["workqueue"].close()
    report_requests("open API")


@pytest.fixture(scope="module")
def secured_schema(fuzz_broker, backend_url, tmp_path_factory):
    """The API as deployed: auth on, a full and a read-only token."""
    app = fuzzed_app(fuzz_broker, backend_url, str(tmp_path_factory.mktemp("fuzz-secured")), secured=True)
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    app.extensions["workqueue"].close()
    report_requests("auth on")


# Status classes of the checked answers, by API: each figure counts one
# fixture's app, whose tests share a worker (their xdist group).
STATUS_CLASSES: collections.defaultdict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


def report_requests(api: str) -> None:
    counted = STATUS_CLASSES.pop(api, collections.Counter())
    by_class = " ".join(f"{k}={v}" for k, v in sorted(counted.items()))
    report(f"[fault figures] fuzz, {api}: requests={sum(counted.values())} {by_class}")


schema = schemathesis.pytest.from_fixture("api_schema")
secured = schemathesis.pytest.from_fixture("secured_schema")


def as_its_operation(case):
    """The case as the operation its request really is.

    OpenAPI matches a concrete path before a template that also fits it, and
    so does the API: a negative case that gives ``task_id`` the value
    ``bulk`` sends ``POST /tasks/bulk/retry``, the bulk retry, answered and
    documented as such (415 without a JSON body), not the retry of a task
    whose id is not even a UUID.  Schemathesis checked it against the
    template's responses (a fresh-clone run, 2026-12-07).
    """
    if case.formatted_path == case.path:
        return case
    try:  # a path of the document, as written (no template matching)
        owner = case.operation.schema[case.formatted_path][case.method.upper()]
    except LookupError:  # none, or not this method: the template's operation answers for it
        return case
    return owner.Case(headers=case.headers, query=case.query, body=case.body, media_type=case.media_type)


def check(case, excluded=(), api="open API", **kwargs):
    response = case.call(**kwargs)
    # A cursor is any string by its schema, but only the ones this API gave
    # out are valid: its documented 400 is the right answer to the others.
    foreign_cursor = response.status_code == 400 and '"invalid_cursor"' in response.text
    excluded = [*excluded, positive_data_acceptance] if foreign_cursor else list(excluded)
    as_its_operation(case).validate_response(response, excluded_checks=excluded)
    STATUS_CLASSES[api][f"{response.status_code // 100}xx"] += 1
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return response


# One worker for the tests of each app: one app, and one figure line, for each.
OPEN_API = pytest.mark.xdist_group("fuzz-open-api")
SECURED_API = pytest.mark.xdist_group("fuzz-secured-api")


@OPEN_API
@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_survives_fuzzing(case):
    check(case)


@OPEN_API
def test_a_request_on_another_operations_path_is_checked_as_that_operation(api_schema):
    case = api_schema["/tasks/{task_id}/retry"]["POST"].Case(path_parameters={"task_id": "bulk"})
    response = check(case)
    assert response.status_code == 415, response.text  # the bulk retry's answer to a body that is not JSON
    with pytest.raises(FailureGroup, match="Undocumented status code"):  # as the template's: what the fuzzer said
        case.validate_response(response)


def check_as(case, caller: str) -> None:
    """``check`` for one caller, and what its token may do: 401 without one, 403 for a reader's writes."""
    headers = CALLERS[caller]
    # With a token sent on every case, schemathesis' own "invalid auth" probe
    # cannot replace it; without one, every /tasks* answer is checked below.
    response = check(case, excluded=[ignored_auth] if headers else [], api="auth on", headers=headers)
    protected = case.path.startswith("/tasks")
    # Some generated cases leave the Authorization header out on purpose
    # (schemathesis' coverage of a missing credential): as good as no token.
    if response.request.headers.get("Authorization") != headers.get("Authorization"):
        caller = "no token"
    if caller == "no token":
        assert (response.status_code == 401) == protected, (case.method, case.path, response.status_code)
    elif caller == "read-only token" and protected and case.method.upper() not in READ_METHODS:
        assert response.status_code == 403, (case.method, case.path, response.status_code)
        assert response.json()["error"]["code"] == "insufficient_scope"
    else:
        assert response.status_code not in (401, 403), (caller, case.method, case.path, response.text)


@SECURED_API
@secured.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_with_auth_survives_fuzzing_without_a_token(case):
    check_as(case, "no token")


@SECURED_API
@secured.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_with_auth_survives_fuzzing_with_a_full_token(case):
    check_as(case, "full token")


@SECURED_API
@secured.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_with_auth_survives_fuzzing_with_a_read_only_token(case):
    check_as(case, "read-only token")
