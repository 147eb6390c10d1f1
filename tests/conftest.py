"""Shared fixtures: private RabbitMQ/Redis, settings, and running services.

Integration tests talk to a RabbitMQ node and a Redis server that this
session starts privately (own ports and data directories) from the
installed server binaries.  Set ``TEST_BROKER_URL`` / ``TEST_RESULT_BACKEND``
to use already-running servers instead (fault tests still start their own,
since they stop them).
"""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testing import certs, faults, servers
from testing.certs import Certificates
from testing.processes import Api, Worker
from workqueue.settings import Settings

servers.reap_leftovers()
atexit.register(servers.kill_all)


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (CI timeout, a killed terminal) must still clean up: turn it
    # into an exception so fixtures' teardown and atexit run.
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminate)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures the fault, probe and load tests measured, in CI's output."""
    if faults.REPORTED:
        terminalreporter.section("figures")
        for line in faults.REPORTED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """A RabbitMQ URL: TEST_BROKER_URL, or a private node started for this session."""
    external = os.environ.get("TEST_BROKER_URL")
    if external:
        yield external
        return
    with servers.started(servers.RabbitMQ()) as node:
        yield node.url


@pytest.fixture(scope="session")
def backend_url() -> Iterator[str]:
    """A Redis URL: TEST_RESULT_BACKEND, or a private server started for this session."""
    external = os.environ.get("TEST_RESULT_BACKEND")
    if external:
        yield external
        return
    with servers.started(servers.Redis()) as server:
        yield server.url


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for in-process clients; keyword arguments override fields.

    The API they build is open (``API_AUTH=off``, said here explicitly): tests
    of access control pass ``api_auth="required"`` and tokens.
    """

    def make(broker: str, backend: str, **overrides: object) -> Settings:
        fields: dict[str, object] = {
            "broker_url": broker,
            "result_backend": backend,
            "runtime_dir": str(tmp_path),
            "api_auth": "off",
        }
        fields.update(overrides)
        return Settings(**fields).validated()  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def stack(broker_url: str, backend_url: str) -> Iterator[tuple[Api, Worker]]:
    """``run.sh api`` and ``run.sh worker`` running against the session's servers."""
    worker = Worker(broker_url, backend_url).start()
    api = Api(broker_url, backend_url).start()
    try:
        worker.wait_ready()
        api.wait_ready()
        yield api, worker
    finally:
        api.stop()
        worker.stop()


@pytest.fixture(scope="session")
def api_url(stack: tuple[Api, Worker]) -> str:
    return stack[0].url


@pytest.fixture
def private_rabbitmq() -> Iterator[servers.RabbitMQ]:
    """A RabbitMQ node of the test's own, for tests that stop or restart it."""
    with servers.started(servers.RabbitMQ()) as node:
        yield node


@pytest.fixture(scope="session")
def tls_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Certificates, servers.RabbitMQ, servers.Redis]]:
    """Certificates made for the session, and a RabbitMQ and a Redis that speak only TLS with them."""
    made = certs.make(tmp_path_factory.mktemp("certs"))
    with servers.started(servers.RabbitMQ(tls=made)) as node, servers.started(servers.Redis(tls=made)) as store:
        yield made, node, store  # type: ignore[misc]


@pytest.fixture
def private_redis() -> Iterator[servers.Redis]:
    with servers.started(servers.Redis()) as server:
        yield server
