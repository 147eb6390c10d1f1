"""Requests that hold something open are capped per process, and give it back when their client leaves.

Event streams and ``?wait=`` each hold a Redis pub/sub connection; publishing
holds a RabbitMQ connection; ``/readyz`` checks both servers.  Each has a
bound that a loop of requests, with or without a token, cannot push past.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import time

import pytest
import redis
import requests

from testing import servers
from testing.faults import report
from testing.processes import Api
from testing.servers import wait_until
from workqueue.settings import REDIS_COMMAND_CONNECTIONS

pytestmark = pytest.mark.integration


def open_waits(url: str) -> float:
    found = re.search(r"^workqueue_api_open_waits (\S+)$", requests.get(f"{url}/metrics", timeout=10).text, re.M)
    assert found, "the gauge is served"
    return float(found.group(1))


def open_stream(port: int, task_id: str) -> socket.socket:
    """An event stream, read up to its first event: it is open."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(f"GET /tasks/{task_id}/events HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    received = b""
    while b"event: state" not in received:
        chunk = connection.recv(4096)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return connection


def broker_connections(node) -> list[str]:
    return [line for line in node.ctl("list_connections", "-q", "name", "channels", "state").splitlines()[1:] if line]


def test_waits_and_streams_are_capped_and_released_when_their_client_leaves(broker_url):
    with servers.started(servers.Redis()) as store:  # its own, to count the API's connections
        api = Api(broker_url, store.url, API_WORKERS="1", API_MAX_WAITS="3").start().wait_ready()
        try:
            # The session's worker runs it against another Redis: here it stays PENDING, its streams open.
            task_id = requests.post(f"{api.url}/tasks", json={"task": "add", "args": [1, 2]}, timeout=10).json()["id"]
            streams = [open_stream(api.port, task_id) for _ in range(3)]
            assert open_waits(api.url) == 3
            refused = requests.get(f"{api.url}/tasks/{task_id}/events", timeout=10)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "too_many_waits"
            assert int(refused.headers["Retry-After"]) > 0
            wait_url = f"{api.url}/tasks/{task_id}?wait=2"
            with concurrent.futures.ThreadPoolExecutor(10) as pool:
                waits = list(pool.map(lambda _: requests.get(wait_url, timeout=10), range(10)))
            assert {w.status_code for w in waits} == {503}
            assert {w.json()["error"]["code"] for w in waits} == {"too_many_waits"}
            assert requests.get(f"{api.url}/tasks/{task_id}", timeout=10).status_code == 200, "plain reads go on"
            connections = len(redis.Redis.from_url(store.url).client_list()) - 1  # not this one
            assert connections <= 3 + REDIS_COMMAND_CONNECTIONS, connections

            left_at = time.monotonic()
            for stream in streams:
                stream.close()  # the clients go away without a word
            wait_until(lambda: open_waits(api.url) == 0, 15, "the streams of departed clients to be released")
            released_in = time.monotonic() - left_at
            assert requests.get(f"{api.url}/tasks/{task_id}?wait=0.2", timeout=10).status_code == 200
        finally:
            api.stop()
    report(
        f"[fault figures] stream-cap: max_waits=3 refused=11/11 redis_connections={connections} "
        f"(cap {3 + REDIS_COMMAND_CONNECTIONS}) released_after_client_left={released_in:.1f}s"
    )
    assert released_in < 10


def test_readiness_and_publishing_hold_few_broker_connections(private_rabbitmq, backend_url):
    api = Api(private_rabbitmq.url, backend_url, API_WORKERS="2", API_BROKER_CONNECTIONS="2").start().wait_ready()
    try:
        before = broker_connections(private_rabbitmq)
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            ready = list(pool.map(lambda _: requests.get(f"{api.url}/readyz", timeout=30).status_code, range(400)))
            posted = list(
                pool.map(
                    lambda i: requests.post(f"{api.url}/tasks", json={"task": "add", "args": [i, 1]}, timeout=30),
                    range(200),
                )
            )
        during = broker_connections(private_rabbitmq)
    finally:
        api.stop()
    assert set(ready) == {200}
    assert [r.status_code for r in posted].count(202) == len(posted), "waiting for a connection is not a refusal"
    # Per process: at most 2 for publishing (and the readiness probe), 1 kept for queue status.
    assert len(during) <= 2 * (2 + 1), f"{during} broker connections (from {before} before the load)"
    report(f"[fault figures] broker-connections: readyz=400 posts=200 concurrency=32 api_processes=2 "
           f"connections={len(during)} (cap {2 * (2 + 1)})")  # fmt: skip


@pytest.mark.parametrize("key", ["schedule:nightly:job-29000000", "batch:5f0c"])
def test_keys_of_scheduled_and_batch_runs_are_refused_over_http(api_url, key):
    response = requests.post(
        f"{api_url}/tasks", json={"task": "add", "args": [1, 2]}, headers={"Idempotency-Key": key}, timeout=10
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "reserved_idempotency_key"
