"""Graceful shutdown: SIGTERM to what ``run.sh`` exec'd, with work in flight.

The worker finishes what it can within WORKER_SHUTDOWN_TIMEOUT, returns the
rest to the queue, and exits 0; nothing is lost.  gunicorn lets in-flight
requests finish.
"""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
from celery import states

from testing.faults import Figures, make_client, report, unfinished
from testing.processes import Api, Worker
from testing.servers import wait_until
from testing.tally import Tally
from tests.integration import fault_tasks

pytestmark = pytest.mark.integration

SHUTDOWN_TIMEOUT = 3
COUNTED = fault_tasks.definitions()


@pytest.fixture
def client(broker_url, backend_url, tmp_path):
    client = make_client(broker_url, backend_url, tmp_path)
    yield client
    client.close()


def test_sigterm_finishes_short_tasks_requeues_long_ones_and_exits_0(own_vhost, backend_url, tmp_path):
    client = make_client(own_vhost.url, backend_url, tmp_path)
    tally_file = tmp_path / "tally"
    counted = {**fault_tasks.service_env(tally_file), "WORKER_CONCURRENCY": "3"}
    try:
        worker = Worker(
            own_vhost.url, backend_url, name="graceful", WORKER_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT), **counted
        ).start().wait_ready()  # fmt: skip
        long_ids = [client.submit(COUNTED["counted_sleep"], {"seconds": 30}) for _ in range(2)]
        short_id = client.submit(COUNTED["counted_sleep"], {"seconds": 1})
        queued = [client.submit(COUNTED["counted_add"], {"x": i, "y": i}) for i in range(20)]
        everything = [*long_ids, short_id, *queued]
        wait_until(
            lambda: all(m["state"] == "STARTED" for m in client.describe_many(long_ids).values()),
            30, "the long tasks to start",
        )  # fmt: skip
        wait_until(lambda: client.describe(short_id)["state"] == "STARTED", 30, "short")

        assert worker.process is not None
        sent = time.monotonic()
        worker.process.signal(signal.SIGTERM)
        code = worker.process.wait(SHUTDOWN_TIMEOUT + 20)
        took = time.monotonic() - sent
        assert code == 0, worker.log()[-3000:]
        assert took < SHUTDOWN_TIMEOUT + 10, f"shutdown took {took:.1f} s"
        assert client.describe(short_id)["state"] == states.SUCCESS, "in-flight short task finished"
        assert "returning them to the queue" in worker.log()
        left = unfinished(client, everything)
        assert set(long_ids) <= set(left), "long tasks were not run to the end"

        # A replacement worker (the next pod) picks up what was returned.
        replacement = Worker(own_vhost.url, backend_url, name="replacement", **counted).start().wait_ready()
        try:
            wait_until(lambda: not unfinished(client, everything), 90, "every task to finish on the new worker", 0.5)
        except TimeoutError as exc:  # say what was left and what both workers said about it
            left = {i: client.describe(i) for i in unfinished(client, everything)}
            tally = Tally.read(tally_file)
            raise AssertionError(
                f"{exc}: {left}; deliveries {[tally.deliveries[i] for i in left]}\n"
                f"--- first worker:\n{worker.log()[-4000:]}\n--- replacement:\n{replacement.log()[-4000:]}"
            ) from None
        figures = Figures("graceful-shutdown").measure(client, everything, tally_file)
        figures.extra = {"exit_code": code, "shutdown_seconds": round(took, 1), "requeued_long": len(long_ids)}
        figures.report()
        assert figures.lost == 0 and figures.duplicated == 0
        # The two long tasks went back to the queue unfinished: redelivered, and started again.
        assert figures.redelivered >= len(long_ids)
        assert replacement.stop() == 0
    finally:
        client.close()


def _start_slow_post(port: int, body: bytes) -> socket.socket:
    """Open a request and send only half of its body: it is in flight."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /tasks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    connection.sendall(head + body[: len(body) // 2])
    return connection


def _finish_slow_post(connection: socket.socket, body: bytes) -> str:
    connection.sendall(body[len(body) // 2 :])
    response = b""
    while chunk := connection.recv(65536):
        response += chunk
    connection.close()
    return response.decode(errors="replace")


def test_sigterm_to_the_api_lets_in_flight_requests_finish(broker_url, backend_url, client):
    api = Api(broker_url, backend_url, API_WORKERS="2", API_THREADS="4").start().wait_ready()
    body = json.dumps({"task": "add", "args": [20, 22]}).encode()
    in_flight = [_start_slow_post(api.port, body) for _ in range(3)]
    time.sleep(0.5)  # gunicorn has accepted them and is reading the bodies
    assert api.process is not None
    api.process.signal(signal.SIGTERM)
    time.sleep(1.0)  # shutdown is under way while the bodies are still arriving
    responses = [_finish_slow_post(connection, body) for connection in in_flight]
    code = api.process.wait(30)
    report(f"[fault figures] api-sigterm: in_flight=3 answered={sum(r.startswith('HTTP/1.1 202') for r in responses)}")
    assert code == 0
    for response in responses:
        assert response.startswith("HTTP/1.1 202"), response[:200]
        task_id = json.loads(response.split("\r\n\r\n", 1)[1])["id"]
        assert client.describe(task_id) is not None, "a 202 task is recorded and enqueued"


def test_sigterm_exits_as_soon_as_the_last_task_finishes_not_at_the_timeout(own_vhost, backend_url, tmp_path):
    """Why the bounded shutdown is ours and not Celery's soft shutdown (ARCHITECTURE.md, "Celery's or ours").

    Celery 5.5+'s soft shutdown (worker_soft_shutdown_timeout, with SIGTERM
    remapped to SIGQUIT) sleeps the whole timeout whenever a task is running
    and then exits 1 (a cold shutdown).  A pod stopped during a one-second
    task would hold its rollout for WORKER_SHUTDOWN_TIMEOUT (610 s in the
    chart) and report failure.  Ours waits only as long as the tasks run.
    """
    client = make_client(own_vhost.url, backend_url, tmp_path)
    try:
        worker = Worker(own_vhost.url, backend_url, name="prompt", WORKER_SHUTDOWN_TIMEOUT="60").start()
        worker.wait_ready()
        task = client.submit("sleep", {"seconds": 1})
        wait_until(lambda: client.describe(task)["state"] in ("STARTED", "PROGRESS"), 30, "the task to start")
        assert worker.process is not None
        sent = time.monotonic()
        worker.process.signal(signal.SIGTERM)
        code = worker.process.wait(60)
        took = time.monotonic() - sent
        final = client.describe(task)["state"]
    finally:
        client.close()
    report(f"[fault figures] prompt-shutdown: task=1s timeout=60s exited_after={took:.1f}s exit_code={code}")
    assert code == 0 and final == states.SUCCESS
    assert took < 15, f"waited {took:.1f} s for a one-second task"
