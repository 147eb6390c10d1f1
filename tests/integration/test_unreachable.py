"""A command-line tool that cannot reach a server says which one, gives up within its bound and exits non-zero.

``submit_tasks.py`` (rounds and batch mode) and the load test, pointed at
hosts that do not resolve (``.invalid``) or ports where nothing listens.
The environment names the servers, so a ``./dev.sh up`` running in this
checkout cannot stand in for them.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from testing.processes import REPO, service_env
from testing.servers import free_port

pytestmark = pytest.mark.integration


def run(argv: list[str], env: dict[str, str], limit: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit + 30)
    return done, time.monotonic() - started


def closed_url(scheme: str) -> tuple[str, str]:
    """A URL where nothing listens, and its host:port."""
    where = f"127.0.0.1:{free_port()}"
    return (f"amqp://guest:guest@{where}//" if scheme == "amqp" else f"redis://{where}/0"), where


def test_submit_tasks_names_an_unresolvable_host_and_gives_up_at_its_timeout(tmp_path):
    env = service_env("", "", tmp_path, RABBITMQ_HOST="rabbit.invalid", REDIS_HOST="redis.invalid")
    del env["BROKER_URL"], env["RESULT_BACKEND"]  # the book's names only, as in the pod
    done, took = run([sys.executable, "submit_tasks.py", "--count", "5", "--timeout", "3"], env, 3)
    assert done.returncode == 1 and took < 3 + 5, (took, done.stdout, done.stderr)
    assert "gave up after 3 s (--timeout; tried " in done.stderr
    assert "result backend unavailable at redis.invalid:6379" in done.stderr
    assert "servers from the environment" in done.stderr
    assert "submitted 0, succeeded 0" in done.stdout


def test_submit_tasks_names_the_broker_it_could_not_reach(tmp_path, backend_url):
    broker, where = closed_url("amqp")
    env = service_env(broker, backend_url, tmp_path)
    done, took = run([sys.executable, "submit_tasks.py", "--count", "2", "--timeout", "2"], env, 2)
    assert done.returncode == 1 and took < 2 + 5, (took, done.stdout, done.stderr)
    assert f"broker unavailable at {where}" in done.stderr
    assert "guest" not in done.stderr + done.stdout, "no credentials in the message"


def test_batch_mode_gives_up_at_its_timeout_and_says_what_was_not_submitted(tmp_path):
    backend, where = closed_url("redis")
    broker, _ = closed_url("amqp")
    env = service_env(broker, backend, tmp_path)
    argv = [str(REPO / "run.sh"), "submit", "--batch", "--task", "add", "--args", "[1, 2]", "--count", "3"]
    done, took = run([*argv, "--timeout", "3"], env, 3)
    assert done.returncode == 1 and took < 3 + 5, (took, done.stdout, done.stderr)
    assert f"result backend unavailable at {where}" in done.stdout
    assert "batch: 3 tasks, 0 submitted" in done.stdout and "3 not submitted" in done.stdout


def test_the_load_test_sends_no_load_when_the_api_does_not_answer(tmp_path, broker_url, backend_url):
    host = f"http://127.0.0.1:{free_port()}"
    env = service_env(broker_url, backend_url, tmp_path)
    argv = [sys.executable, "-m", "loadtest.run", "--host", host, "--duration", "5", "--out", str(tmp_path / "r")]
    done, took = run(argv, env, 15)
    assert done.returncode == 1 and took < 10 + 5, (took, done.stderr)
    assert f"no load was sent: the API at {host} does not answer /healthz" in done.stderr
    assert not (tmp_path / "r").exists()


def test_the_load_test_sends_no_load_when_it_cannot_read_the_queue(tmp_path, api_url, backend_url):
    broker, where = closed_url("amqp")
    env = service_env(broker, backend_url, tmp_path)
    argv = [sys.executable, "-m", "loadtest.run", "--host", api_url, "--duration", "5", "--out", str(tmp_path / "r")]
    done, took = run(argv, env, 15)
    assert done.returncode == 1 and took < 10 + 5, (took, done.stderr)
    assert f"no load was sent: the queue depth cannot be read: broker unavailable at {where}" in done.stderr
