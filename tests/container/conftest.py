"""Fixtures of the container tests: podman, the image, containers, a broker.

Nothing here skips: on this kind of machine podman works (see
``scripts/podman-env.sh``), so a podman that cannot be installed or run,
or an image that does not build, fails every container test with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pytest

from testing import servers
from testing.processes import wait_for_readyz
from testing.servers import free_port
from tests.container.podman import IMAGE_TAG, Container, Containers, Podman, PodmanUnavailable


@pytest.fixture(scope="session")
def podman() -> Podman:
    try:
        podman = Podman.configure()
        podman.reap_leftovers()
        return podman
    except (PodmanUnavailable, RuntimeError) as exc:
        problem = str(exc)
    pytest.fail(f"podman is not usable here, so the image cannot be tested:\n{problem}", pytrace=False)


@pytest.fixture(scope="session")
def image(podman: Podman) -> str:
    """The ID of the image built from the work tree (layers cached between runs)."""
    try:
        image_id, seconds = podman.build(IMAGE_TAG)
        print(f"\nbuilt {IMAGE_TAG} ({image_id[:12]}) in {seconds:.1f} s")
        return image_id
    except PodmanUnavailable as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def containers(podman: Podman, image: str) -> Iterator[Containers]:
    """Starts containers of the image; all of them are removed at the end, pass or fail."""
    started = Containers(podman, image)
    try:
        yield started
    finally:
        started.remove_all()


@pytest.fixture(scope="module")
def container_broker() -> Iterator[str]:
    """A RabbitMQ node for the containers alone.

    Not the session's broker: a worker of the host-side tests may consume
    from that one, and these tests must see the containers do the work.
    """
    with servers.started(servers.RabbitMQ()) as node:
        yield node.url


def service_env(broker_url: str, backend_url: str, **extra: str) -> dict[str, str]:
    """Environment of the api/worker containers (as the Deployment sets it)."""
    return {
        "BROKER_URL": broker_url,
        "RESULT_BACKEND": backend_url,
        "WORKER_HEARTBEAT_INTERVAL": "0.5",
        # Several workers share the host network: no fixed metrics port.
        "WORKER_METRICS_PORT": "0",
        **extra,
    }


def deploy_env(broker_url: str, backend_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """The ConfigMap's and the Secret's variables for these servers (no URLs)."""
    broker = urlsplit(broker_url)
    backend = urlsplit(backend_url)
    vhost = unquote(broker.path[1:]) if len(broker.path) > 1 else "/"
    config = {
        "RABBITMQ_HOST": broker.hostname or "127.0.0.1",
        "RABBITMQ_PORT": str(broker.port or 5672),
        "RABBITMQ_VHOST": vhost,
        "REDIS_HOST": backend.hostname or "127.0.0.1",
        "REDIS_PORT": str(backend.port or 6379),
        "REDIS_DB": backend.path.strip("/") or "0",
    }
    secret = {
        "RABBITMQ_USERNAME": unquote(broker.username or "guest"),
        "RABBITMQ_PASSWORD": unquote(broker.password or "guest"),
    }
    if backend.password:
        secret["REDIS_PASSWORD"] = unquote(backend.password)
    return config, secret


API_TOKEN = "container-test-token"


class Stack:
    """The API container (requiring a bearer token, as the chart runs it) and a worker container, on one broker."""

    def __init__(self, api: Container, worker: Container, port: int, broker_url: str, backend_url: str) -> None:
        self.api = api
        self.worker = worker
        self.url = f"http://127.0.0.1:{port}"
        self.broker_url = broker_url
        self.backend_url = backend_url
        self.token = API_TOKEN


@pytest.fixture(scope="module")
def stack(containers: Containers, container_broker: str, backend_url: str) -> Iterator[Stack]:
    port = free_port()
    env = service_env(container_broker, backend_url)
    worker = containers.start("worker", env=env)
    api = containers.start("api", "api", env={**env, "PORT": str(port), "API_TOKENS": API_TOKEN})
    url = f"http://127.0.0.1:{port}"

    try:
        worker.wait_probe("--ready")
        wait_for_readyz(url, api.running, api.logs, 90, "the API container")
        yield Stack(api, worker, port, container_broker, backend_url)
    finally:
        containers.remove(api)
        containers.remove(worker)
