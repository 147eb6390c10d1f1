"""Start ``run.sh worker`` / ``run.sh api`` as real processes for the tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

from testing.servers import Process, free_port, new_server_dir, wait_until

REPO = Path(__file__).resolve().parents[1]

# Variables of the developer's shell that would change what the services
# connect to; the tests set their own.
_SCRUBBED_PREFIXES = (
    "RABBITMQ_",
    "REDIS_",
    "BROKER_URL",
    "RESULT_BACKEND",
    "WORKER_",
    "TASK_",
    "API_",
    "PROMETHEUS_",
    "OTEL_",
)


def service_env(broker_url: str, backend_url: str, runtime_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a service under test; ``extra`` adds or overrides variables.

    The API is open (``API_AUTH=off``) unless ``extra`` gives it tokens
    (``API_TOKENS``/``API_READ_TOKENS``) or says ``API_AUTH`` itself.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    given_tokens = extra.get("API_TOKENS") or extra.get("API_READ_TOKENS")
    env.update(
        API_AUTH="required" if given_tokens else "off",
        BROKER_URL=broker_url,
        RESULT_BACKEND=backend_url,
        RUNTIME_DIR=str(runtime_dir),
        PYTHON=sys.executable,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        WORKER_HEARTBEAT_INTERVAL="0.5",
        WORKER_METRICS_PORT="0",  # several workers share this host; tests that need it set a port
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Worker:
    """``run.sh worker`` with its own node name and runtime (probe) directory."""

    def __init__(
        self, broker_url: str, backend_url: str, name: str = "worker", repo: Path = REPO, **extra: str
    ) -> None:
        self.repo = repo  # the source tree whose run.sh starts it
        self.dir = new_server_dir(name)
        self.runtime_dir = self.dir / "runtime"
        self.env = service_env(broker_url, backend_url, self.runtime_dir, **extra)
        self.nodename = f"{name}-{self.dir.name}@localhost"
        self.process: Process | None = None

    def start(self, *extra_args: str) -> Worker:
        argv = [str(self.repo / "run.sh"), "worker", "-n", self.nodename, *extra_args]
        self.process = Process(argv, self.env, self.dir / "worker.log", cwd=str(self.repo))
        return self

    @property
    def ready_file(self) -> Path:
        return self.runtime_dir / "worker.ready"

    def wait_ready(self, timeout: float = 60.0) -> Worker:
        def ready() -> bool:
            assert self.process is not None
            if not self.process.alive():
                raise RuntimeError(f"worker exited:\n{self.process.log_tail()}")
            return self.ready_file.exists()

        wait_until(ready, timeout, "worker readiness file")
        return self

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.process is None:
            return None
        code = self.process.stop(timeout)
        return code

    def log(self) -> str:
        return (self.dir / "worker.log").read_text(errors="replace")


class Api:
    """``run.sh api`` on a free port."""

    def __init__(self, broker_url: str, backend_url: str, repo: Path = REPO, **extra: str) -> None:
        self.repo = repo  # the source tree whose run.sh starts it
        self.dir = new_server_dir("api")
        self.port = free_port()
        self.env = service_env(broker_url, backend_url, self.dir / "runtime", PORT=str(self.port), **extra)
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Api:
        self.process = Process([str(self.repo / "run.sh"), "api"], self.env, self.dir / "api.log", cwd=str(self.repo))
        return self

    def wait_ready(self, timeout: float = 60.0) -> Api:
        process = self.process
        assert process is not None
        wait_for_readyz(self.url, process.alive, process.log_tail, timeout, "the API")
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        return self.process.stop(timeout) if self.process else None

    def log(self) -> str:
        return (self.dir / "api.log").read_text(errors="replace")


def wait_for_readyz(
    url: str, alive: Callable[[], bool], log_tail: Callable[[], str], timeout: float, what: str
) -> None:
    """Poll ``url/readyz`` until it answers 200; fail at once if the server exited."""

    def ready() -> bool:
        if not alive():
            raise RuntimeError(f"{what} exited:\n{log_tail()}")
        try:
            return requests.get(f"{url}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout, f"{what} to serve /readyz", interval=0.2)


def wait_for_state(
    base_url: str,
    task_id: str,
    states: Mapping[str, None] | set[str] | tuple[str, ...],
    timeout: float = 60.0,
    headers: Mapping[str, str] | None = None,
) -> dict:
    """Poll ``GET /tasks/<id>`` (with ``headers``, e.g. a bearer token) until the state is one of ``states``."""
    seen: dict = {}

    def reached() -> bool:
        nonlocal seen
        seen = requests.get(f"{base_url}/tasks/{task_id}", headers=headers, timeout=5).json()
        return seen.get("state") in states

    try:
        wait_until(reached, timeout, f"task {task_id} to reach {sorted(states)}", interval=0.05)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last seen {seen}") from None
    return seen
