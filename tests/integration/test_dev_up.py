"""``./dev.sh up``: the README's main-job command, on the embedded default and on real servers."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import requests
from celery import states

from dev.launcher import choose_backends, shown
from testing.processes import REPO, service_env, wait_for_readyz, wait_for_state
from testing.servers import Process, free_port, wait_until
from workqueue import local_session


def closed_port() -> tuple[str, int]:
    return ("127.0.0.1", free_port())  # nothing listens there


def test_choose_backends_prefers_configuration_then_localhost_then_embedded(tmp_path):
    configured, notes = choose_backends({"BROKER_URL": "amqp://x//", "REDIS_HOST": "r"}, tmp_path)
    assert configured == {} and notes == ["broker: as configured", "results: as configured"]

    local, _ = choose_backends(
        {}, tmp_path, probe=lambda host, port: True, rabbitmq=("127.0.0.1", 5), redis=("127.0.0.1", 6)
    )
    assert local == {"BROKER_URL": "amqp://guest:guest@127.0.0.1:5//", "RESULT_BACKEND": "redis://127.0.0.1:6/0"}

    embedded, notes = choose_backends({}, tmp_path, rabbitmq=closed_port(), redis=closed_port())
    assert embedded == {
        "BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
        "RESULT_BACKEND": f"file://{tmp_path / 'results'}",
    }
    assert notes[0].startswith("broker: embedded")


@pytest.mark.integration
def test_choose_backends_finds_servers_listening_locally(tmp_path, broker_url, backend_url):
    rabbit_port = int(broker_url.rsplit(":", 1)[1].split("/")[0])
    redis_port = int(backend_url.rsplit(":", 1)[1].split("/")[0])
    chosen, _ = choose_backends({}, tmp_path, rabbitmq=("127.0.0.1", rabbit_port), redis=("127.0.0.1", redis_port))
    assert chosen == {"BROKER_URL": broker_url, "RESULT_BACKEND": backend_url}


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (IPv4 and IPv6), from the kernel's tables."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def run_walkthrough(env: dict[str, str], args: list[str], log: Path, worker_line: str | None = None) -> str:
    """Start ``./dev.sh up``, do the README's first two steps, stop it with Ctrl+C.

    ``worker_line``: wait for the worker to log it before stopping.  On shared
    servers another test's worker may run the walk-through's task while this
    worker is still connecting, so the task alone does not show it connected.
    While it runs, the API listens on 127.0.0.1 alone and the session file
    holds the URLs it printed; once stopped, the file is gone.
    """
    port = free_port()
    env = {**env, "PORT": str(port), "WORKER_METRICS_PORT": "0"}
    process = Process([str(REPO / "dev.sh"), "up", *args], env, log, cwd=str(REPO))
    url = f"http://127.0.0.1:{port}"
    session = Path(args[args.index("--data-dir") + 1]) / "session.env"
    try:
        wait_for_readyz(url, process.alive, process.log_tail, 120, "dev.sh up")
        assert listening_addresses(port) == {"0100007F"}, "127.0.0.1 only, as the first line says"
        response = requests.post(f"{url}/tasks", json={"task": "add", "args": [2, 3]}, timeout=10)
        assert response.status_code == 202
        view = wait_for_state(url, response.json()["id"], states.READY_STATES, timeout=30)
        assert view["state"] == states.SUCCESS and view["result"] == 5
        # The dashboard comes with it; on the embedded store it says why it cannot show tasks.
        dashboard = requests.get(f"{url}/dashboard/", timeout=10)
        assert dashboard.status_code == (200 if worker_line else 501), dashboard.text[:300]
        if worker_line:
            wait_until(lambda: worker_line in log.read_text(errors="replace"), 60, f"the worker to log {worker_line!r}")
        recorded = local_session.read(session)
        assert recorded is not None and recorded[local_session.API_URL] == url
        printed = log.read_text(errors="replace")
        assert f"  API             {url}  (listening on 127.0.0.1:{port}" in printed
        for name in ("BROKER_URL", "RESULT_BACKEND"):
            assert f"  {name:<15} {shown(recorded[name])}" in printed, name
        process.signal(signal.SIGINT)  # Ctrl+C stops both services
        assert process.wait(60) == 0
    finally:
        process.kill()
    assert not session.exists(), "a stopped session leaves no session file"
    return log.read_text()


@pytest.mark.integration
def test_dev_up_serves_the_walkthrough_on_the_embedded_default(tmp_path):
    unset = ("BROKER_URL", "RESULT_BACKEND", "API_AUTH", "API_TOKENS", "API_READ_TOKENS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["RABBITMQ_HOST"] = "ignored.invalid"  # --embedded wins over configured servers
    output = run_walkthrough(env, ["--embedded", "--data-dir", str(tmp_path / "data")], tmp_path / "up.log")
    first = output.splitlines()[0]
    assert first.startswith("workqueue: broker: embedded (kombu filesystem transport")
    assert "results: embedded" in first
    # No token given: open, deliberately (API_AUTH=off), and said in the first line.
    assert "open to anyone (API_AUTH=off; set API_TOKENS to require a token)" in first, first
    assert re.search(r"; dashboard on http://127\.0\.0\.1:\d+/dashboard/$", first), first


@pytest.mark.integration
def test_dev_up_serves_the_walkthrough_on_rabbitmq_and_redis(tmp_path, broker_url, backend_url):
    env = service_env(broker_url, backend_url, tmp_path / "runtime")
    output = run_walkthrough(env, ["--data-dir", str(tmp_path / "data")], tmp_path / "up.log", "Connected to amqp://")
    assert output.splitlines()[0].startswith("workqueue: broker: as configured; results: as configured")
    assert not (tmp_path / "data" / "broker").exists()
    assert "Connected to amqp://" in output
