"""Hostile input: schemathesis fuzzes the API from its own /openapi.json.

Positive and negative cases are generated from the document; every
response must be a non-5xx in the documented shape (schemathesis' default
checks: no server error, documented status codes, content type and
response schema).  The run is bounded (a few dozen examples per operation)
and uses a RabbitMQ node of its own with no worker, so fuzzed tasks (say
``sleep(300)``) just queue up and are thrown away with the node.
"""

from __future__ import annotations

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from api.app import create_app
from testing import servers
from testing.faults import report
from workqueue.settings import Settings

pytestmark = pytest.mark.integration


TOKEN = "fuzz-token-" + "0123456789abcdef"


def app_for(node_url: str, backend_url: str, runtime: str, tokens: tuple[str, ...] = ()):
    settings = Settings(broker_url=node_url, result_backend=backend_url, runtime_dir=runtime, api_tokens=tokens)
    return create_app(settings, TESTING=True)


@pytest.fixture(scope="module")
def fuzz_broker():
    with servers.started(servers.RabbitMQ()) as node:
        yield node.url


@pytest.fixture(scope="module")
def api_schema(fuzz_broker, backend_url, tmp_path_factory):
    """The API as it runs by default: no API_TOKENS."""
    app = app_for(fuzz_broker, backend_url, str(tmp_path_factory.mktemp("fuzz")))
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    app.extensions["workqueue"].close()
    by_class = " ".join(f"{k}={v}" for k, v in sorted(STATUS_CLASSES.items()))
    report(f"[fault figures] fuzz: requests={sum(STATUS_CLASSES.values())} {by_class}")


@pytest.fixture(scope="module")
def secured_schema(fuzz_broker, backend_url, tmp_path_factory):
    """The API with API_TOKENS set; the fuzzer sends the token."""
    app = app_for(fuzz_broker, backend_url, str(tmp_path_factory.mktemp("fuzz-secured")), (TOKEN,))
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    app.extensions["workqueue"].close()


STATUS_CLASSES: collections.Counter[str] = collections.Counter()


schema = schemathesis.pytest.from_fixture("api_schema")
secured = schemathesis.pytest.from_fixture("secured_schema")


def check(case, excluded=(), **kwargs) -> None:
    response = case.call(**kwargs)
    # A cursor is any string by its schema, but only the ones this API gave
    # out are valid: its documented 400 is the right answer to the others.
    foreign_cursor = response.status_code == 400 and '"invalid_cursor"' in response.text
    excluded = [*excluded, positive_data_acceptance] if foreign_cursor else list(excluded)
    case.validate_response(response, excluded_checks=excluded)
    STATUS_CLASSES[f"{response.status_code // 100}xx"] += 1
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_survives_fuzzing(case):
    check(case)


@secured.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_with_tokens_survives_fuzzing(case):
    # The token is sent with every case, so schemathesis' own "invalid auth"
    # probe cannot replace it; tests/integration/test_auth.py covers the 401s.
    check(case, excluded=[ignored_auth], headers={"Authorization": f"Bearer {TOKEN}"})
