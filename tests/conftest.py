"""The named fixtures every test file uses: servers, settings, apps and clients, running services.

Integration tests talk to a RabbitMQ node and a Redis server that this
session starts privately (own ports and data directories) from the
installed server binaries.  Set ``TEST_BROKER_URL`` / ``TEST_RESULT_BACKEND``
to use already-running servers instead (fault tests still start their own,
since they stop them).

The names, in the manner of Flask's tutorial:

- ``servers``: the session's RabbitMQ and Redis (``.broker``, ``.backend``;
  also ``broker_url``, ``backend_url``), shared by every test that does not
  stop or break them; ``own_vhost``, an empty virtual host on the session's
  node, for a test that needs a broker to itself but does not stop it;
  ``private_rabbitmq``, ``private_redis`` for those that do;
- ``make_settings(broker, backend, **fields)``: ``Settings`` of an open API;
- ``app_for(broker, backend, **fields)``: ``create_app`` on those servers;
  ``task_client_for(broker, backend, **fields)``: a ``TaskClient``; both
  close every client they made after the test;
- ``app``, ``client``: the open API on the session's servers, and its test
  client (``tests/unit/conftest.py`` gives the same names to the API over an
  in-memory stand-in, for tests that need no server);
- ``stack``, ``api_url``: ``run.sh api`` and ``run.sh worker`` running.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from testing import certs, faults, servers
from testing.certs import Certificates
from testing.processes import Api, Worker
from workqueue.client import TaskClient
from workqueue.settings import Settings

# Under pytest-xdist each worker imports this file; only the controller (or a
# run without workers) reaps, so no worker takes a sibling's new server for a leftover.
if "PYTEST_XDIST_WORKER" not in os.environ:
    servers.reap_leftovers()
atexit.register(servers.kill_all)


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (CI timeout, a killed terminal) must still clean up: turn it
    # into an exception so fixtures' teardown and atexit run.  pytest-xdist's
    # controller would wait for its workers to finish every test: it passes
    # the signal on to them (its only children; without workers, the servers
    # tests started, which teardown stops anyway).
    if "PYTEST_XDIST_WORKER" not in os.environ:
        for child in servers.children(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminate)
# A run started in the background by a script (``nohup ./dev.sh test &``)
# ignores SIGINT, and an ignored signal stays ignored in every child: the
# README's Ctrl+C (``./dev.sh up``, ``submit_tasks.py``) would then do
# nothing in its tests.  Python's own handler is reset to the default on exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


FIGURE = "figure"
FIGURES: list[str] = []  # in the process that prints the summary: the controller under xdist


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Each figure a test reported rides on its reports: an xdist worker sends them to the controller."""
    report = yield
    while faults.REPORTED:
        report.user_properties.append((FIGURE, faults.REPORTED.pop(0)))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    FIGURES.extend(str(value) for name, value in report.user_properties if name == FIGURE)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures the fault, probe and load tests measured, in CI's output."""
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def session_rabbitmq() -> Iterator[servers.RabbitMQ | None]:
    """The node started for this session, or None when TEST_BROKER_URL names one."""
    if os.environ.get("TEST_BROKER_URL"):
        yield None
        return
    with servers.started(servers.RabbitMQ()) as node:
        yield node


@pytest.fixture(scope="session")
def broker_url(session_rabbitmq: servers.RabbitMQ | None) -> str:
    """A RabbitMQ URL: TEST_BROKER_URL, or the node started for this session."""
    return session_rabbitmq.url if session_rabbitmq is not None else os.environ["TEST_BROKER_URL"]


@pytest.fixture(scope="session")
def backend_url() -> Iterator[str]:
    """A Redis URL: TEST_RESULT_BACKEND, or a private server started for this session."""
    external = os.environ.get("TEST_RESULT_BACKEND")
    if external:
        yield external
        return
    with servers.started(servers.Redis()) as server:
        yield server.url


class Servers(NamedTuple):
    broker: str
    backend: str


@pytest.fixture(scope="session", name="servers")
def session_servers(broker_url: str, backend_url: str) -> Servers:
    """The session's RabbitMQ and Redis URLs; ``app_for(*servers)`` builds an API on them."""
    return Servers(broker_url, backend_url)


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


@pytest.fixture
def app_for(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Flask]]:
    """``create_app`` (testing mode) on ``broker`` and ``backend``; keyword arguments override settings.

    Every app's ``TaskClient`` is closed after the test (closing one earlier,
    before its server goes away, is harmless: a second close does nothing).
    """
    made: list[Flask] = []

    def make(broker: str, backend: str, **overrides: Any) -> Flask:
        made.append(create_app(make_settings(broker, backend, **overrides), TESTING=True))
        return made[-1]

    yield make
    for app in made:
        app.extensions["workqueue"].close()


@pytest.fixture
def task_client_for(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TaskClient]]:
    """A ``TaskClient`` (the API's own way in) for ``broker`` and ``backend``, closed after the test."""
    made: list[TaskClient] = []

    def make(broker: str, backend: str, **overrides: Any) -> TaskClient:
        made.append(TaskClient(make_settings(broker, backend, **overrides)))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def app(servers: Servers, app_for: Callable[..., Flask]) -> Flask:
    """The open API (``API_AUTH=off``) on the session's servers, in this process."""
    return app_for(servers.broker, servers.backend)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """The app's test client (Flask's name for it)."""
    return app.test_client()


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


@pytest.fixture
def own_vhost(session_rabbitmq: servers.RabbitMQ | None) -> Iterator[servers.VirtualHost | servers.RabbitMQ]:
    """A broker of the test's own that it does not stop, freeze or alarm (``.url``, ``.ctl``).

    An empty virtual host on the session's node, deleted afterwards; a
    private node when the session's broker is external (no ``rabbitmqctl``).
    """
    if session_rabbitmq is None:
        server: servers.VirtualHost | servers.RabbitMQ = servers.RabbitMQ()
    else:
        server = servers.VirtualHost(session_rabbitmq, f"test-{os.urandom(4).hex()}")
    with servers.started(server) as started:
        yield started


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
