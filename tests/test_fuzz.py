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

from api.app import create_app
from tests import servers
from tests.faults import report
from worker.celery_app import close_celery
from worker.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fuzzed_app(backend_url, tmp_path_factory):
    runtime = tmp_path_factory.mktemp("fuzz")
    with servers.started(servers.RabbitMQ()) as node:
        app = create_app(
            Settings(broker_url=node.url, result_backend=backend_url, runtime_dir=str(runtime)), TESTING=True
        )
        try:
            yield app
        finally:
            close_celery(app.extensions["celery"])


@pytest.fixture(scope="module")
def api_schema(fuzzed_app):
    yield schemathesis.openapi.from_wsgi("/openapi.json", fuzzed_app)
    by_class = " ".join(f"{k}={v}" for k, v in sorted(STATUS_CLASSES.items()))
    report(f"[fault figures] fuzz: requests={sum(STATUS_CLASSES.values())} {by_class}")


STATUS_CLASSES: collections.Counter[str] = collections.Counter()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_survives_fuzzing(case):
    response = case.call_and_validate()
    STATUS_CLASSES[f"{response.status_code // 100}xx"] += 1
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
