"""No secret outside the Secret: passwords and tokens appear nowhere an operator or a client can read them.

A real worker and a real API (``run.sh``), against a RabbitMQ user and a
Redis password made for this test alone, with bearer tokens of both scopes.
Then every place that could show them is searched for them: what ``celery
inspect`` answers (what Flower shows), the worker's and the API's logs at
debug level, ``/metrics`` of both, the API's error bodies (the broker down
included), and the command line of every process the test started.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis
import requests

from testing import servers
from testing.faults import report
from testing.processes import REPO, Api, Worker, wait_for_state
from testing.servers import command_lines, free_port, wait_until

pytestmark = pytest.mark.integration

# Characters a generated password has, and ones that need quoting in a URL.
RABBITMQ_PASSWORD = f"rmq-{secrets.token_hex(12)}-p@ss/wörd"
REDIS_PASSWORD = f"redis-{secrets.token_hex(12)}"
FULL_TOKEN = f"full-{secrets.token_hex(16)}"
READ_TOKEN = f"read-{secrets.token_hex(16)}"
USER = "secrets-test"


def forms(secret: str) -> set[str]:
    """The secret and the forms it takes in a URL (percent-encoded)."""
    return {secret, quote(secret, safe=""), quote(secret)}


SECRETS = {
    name: forms(value)
    for name, value in {
        "RABBITMQ_PASSWORD": RABBITMQ_PASSWORD,
        "REDIS_PASSWORD": REDIS_PASSWORD,
        "API_TOKENS": FULL_TOKEN,
        "API_READ_TOKENS": READ_TOKEN,
    }.items()
}


def leaks(where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, found in SECRETS.items() if any(form in text for form in found)]


@pytest.fixture(scope="module")
def protected() -> Iterator[tuple[servers.RabbitMQ, servers.Redis]]:
    """A RabbitMQ with a user of its own and a Redis with a password, both set without any command line."""
    with servers.started(servers.RabbitMQ()) as node, servers.started(servers.Redis()) as store:
        node.ctl("add_user", USER, stdin=RABBITMQ_PASSWORD + "\n")  # read from stdin: not in rabbitmqctl's argv
        node.ctl("set_permissions", "-p", "/", USER, ".*", ".*", ".*")
        redis.Redis(port=store.port).config_set("requirepass", REDIS_PASSWORD)
        yield node, store


@pytest.fixture(scope="module")
def services(protected) -> Iterator[tuple[Api, Worker, dict[str, str]]]:
    node, store = protected
    broker = f"amqp://{USER}:{quote(RABBITMQ_PASSWORD, safe='')}@127.0.0.1:{node.port}//"
    backend = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{store.port}/0"
    # The worker gets the tokens too: its settings object must not carry them anywhere visible either.
    extra = {
        "API_TOKENS": FULL_TOKEN,
        "API_READ_TOKENS": READ_TOKEN,
        "WORKER_DEBUG_LEVEL": "debug",
        "API_ACCESS_LOG": "-",
        "WORKER_SEND_EVENTS": "true",  # what Flower needs: the worker's events and heartbeats
    }
    worker = Worker(broker, backend, name="secrets", WORKER_METRICS_PORT=str(free_port()), **extra).start()
    api = Api(broker, backend, **extra).start()
    try:
        worker.wait_ready()
        api.wait_ready()
        yield api, worker, worker.env
    finally:
        api.stop()
        worker.stop()


def celery_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.main", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_no_password_or_token_shows_anywhere_a_reader_can_see(services, protected):
    api, worker, env = services
    node, store = protected
    full, read = {"Authorization": f"Bearer {FULL_TOKEN}"}, {"Authorization": f"Bearer {READ_TOKEN}"}
    seen: dict[str, str] = {}

    # Real work through both, so every code path that could log or count something has run.
    task = requests.post(f"{api.url}/tasks", json={"task": "add", "args": [2, 3]}, headers=full, timeout=10)
    assert task.status_code == 202, task.text
    assert wait_for_state(api.url, task.json()["id"], {"SUCCESS"}, headers=read)["result"] == 5

    # What Flower shows of a worker: its configuration, stats and registered tasks (celery inspect).
    node_name = ["-d", worker.nodename]
    seen["inspect conf"] = celery_cli(env, "inspect", "conf", *node_name)
    seen["inspect conf with defaults"] = celery_cli(env, "inspect", "conf", "true", *node_name)
    seen["inspect stats"] = celery_cli(env, "inspect", "stats", *node_name)
    seen["inspect report"] = celery_cli(env, "inspect", "report", *node_name)
    assert "task_acks_late" in seen["inspect conf"], "the worker answered with its configuration"
    assert "broker_url" in seen["inspect conf with defaults"]

    seen["API /metrics"] = requests.get(f"{api.url}/metrics", timeout=10).text
    port = env["WORKER_METRICS_PORT"]
    seen["worker /metrics"] = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert "celery_task_succeeded_total" in seen["worker /metrics"]

    # Error bodies: every kind of refusal, each with a real token or a near miss.
    errors = {
        "401 no token": requests.post(f"{api.url}/tasks", json={}, timeout=10),
        "401 wrong token": requests.get(f"{api.url}/tasks", headers={"Authorization": f"Bearer {FULL_TOKEN}x"}),
        "403 read token": requests.post(f"{api.url}/tasks", json={"task": "add", "args": [1, 2]}, headers=read),
        "404": requests.get(f"{api.url}/nowhere", headers=full, timeout=10),
        "405": requests.put(f"{api.url}/tasks", headers=full, timeout=10),
        "415": requests.post(f"{api.url}/tasks", data="x", headers=full, timeout=10),
        "422": requests.post(f"{api.url}/tasks", json={"task": "add", "args": ["x"]}, headers=full, timeout=10),
    }
    for name, response in errors.items():
        assert response.status_code == int(name[:3]), (name, response.text)
        seen[f"error body {name}"] = response.text + str(response.headers)

    # The broker gone: 503 bodies, readiness, and the reconnect messages of both logs.
    node.stop()
    try:
        outage = requests.post(f"{api.url}/tasks", json={"task": "add", "args": [1, 2]}, headers=full, timeout=10)
        assert outage.status_code == 503
        seen["error body 503"] = outage.text
        ready = requests.get(f"{api.url}/readyz", timeout=10)
        assert ready.status_code == 503
        seen["/readyz while the broker is down"] = ready.text
        wait_until(lambda: "Cannot connect to amqp" in worker.log(), 30, "the worker to log its reconnect attempts")
    finally:
        node.start()

    # Every process this test started (and the servers'): their arguments.
    groups = {"api": api.process, "worker": worker.process, "redis": store.process, "rabbitmq": node.process}
    for name, process in groups.items():
        assert process is not None
        lines = command_lines(process.pid)
        assert lines, f"no live process in the {name} group"
        for pid, line in lines.items():
            seen[f"cmdline of {name} pid {pid}"] = line
    assert any("redis-server" in line for line in command_lines(store.process.pid).values())
    assert any("gunicorn" in line for line in command_lines(api.process.pid).values())

    seen["worker log"] = worker.log()
    seen["API log"] = (api.dir / "api.log").read_text(errors="replace")
    assert '"POST /tasks HTTP/1.1" 202' in seen["API log"], "the access log is on"
    assert "DEBUG" in seen["worker log"], "the worker logs at debug level"

    found = [leak for where, text in seen.items() for leak in leaks(where, text)]
    report(f"[fault figures] secrets: places searched={len(seen)} leaks={len(found)}")
    assert found == []


def test_the_search_finds_a_secret_where_one_is(services):
    """Negative control: the same search, given text that holds the secrets, finds each of them."""
    api, worker, env = services
    # The worker's own environment holds them (it is where they belong): the search must see them there.
    text = " ".join(f"{k}={v}" for k, v in env.items())
    assert {leak.split(" in ")[0] for leak in leaks("environment", text)} == set(SECRETS)
    # And in a URL, percent-encoded, as Celery would print an unmasked broker URL.
    assert leaks("a URL", env["BROKER_URL"]) == ["RABBITMQ_PASSWORD in a URL"]
