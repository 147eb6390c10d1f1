"""Several queues, a worker pool for each: long tasks on `slow` never delay `add` on `celery`."""

from __future__ import annotations

import re
import statistics
import time

import pytest
import requests

from testing.faults import report
from testing.processes import Worker
from testing.servers import free_port, wait_until

pytestmark = pytest.mark.integration

ROUTES = "pi=slow,sleep=slow"


def test_a_saturated_slow_pool_does_not_delay_the_default_queue(own_vhost, backend_url, app_for):
    http = app_for(own_vhost.url, backend_url, task_routes=tuple(ROUTES.split(","))).test_client()
    port = free_port()
    fast = Worker(own_vhost.url, backend_url, name="pool-celery", TASK_ROUTES=ROUTES, WORKER_QUEUES="celery")
    slow = Worker(
        own_vhost.url, backend_url, name="pool-slow", TASK_ROUTES=ROUTES, WORKER_QUEUES="slow",
        WORKER_CONCURRENCY="1", WORKER_METRICS_PORT=str(port),
    )  # fmt: skip
    try:
        fast.start().wait_ready()
        # No pool for `slow` yet: /readyz says so without going unready, and its tasks wait.
        waiting = http.post("/tasks", json={"task": "sleep", "args": [1]}).get_json()["id"]
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.get_json()["queues"] == {"celery": "ok", "slow": "no consumer"}
        assert http.get(f"/tasks/{waiting}?wait=2").get_json()["state"] == "PENDING"

        slow.start().wait_ready()
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert re.search(r'^celery_active_consumer_count\{queue_name="slow"\} 1\.0$', metrics, re.M), metrics[-2000:]
        ready_again = {"celery": "ok", "slow": "ok"}  # readiness is kept a second (READINESS_SECONDS)
        wait_until(lambda: http.get("/readyz").get_json()["queues"] == ready_again, 10, "the slow pool in /readyz")
        assert http.get(f"/tasks/{waiting}?wait=20").get_json()["state"] == "SUCCESS"

        # Saturate the slow pool (one process) with long tasks, then time adds.
        long_ids = [http.post("/tasks", json={"task": "sleep", "args": [4]}).get_json()["id"] for _ in range(3)]
        wait_until(
            lambda: http.get(f"/tasks/{long_ids[0]}").get_json()["state"] == "PROGRESS", 20, "the slow pool busy"
        )
        latencies = []
        for i in range(20):
            started = time.monotonic()
            task_id = http.post("/tasks", json={"task": "add", "args": [i, i]}).get_json()["id"]
            assert http.get(f"/tasks/{task_id}?wait=10").get_json()["state"] == "SUCCESS"
            latencies.append(time.monotonic() - started)
        backlog = [http.get(f"/tasks/{i}").get_json()["state"] for i in long_ids]
        assert backlog.count("PENDING") >= 1, "the slow queue really was backed up while adds ran"
        assert "Task workqueue.sleep" not in fast.log(), "the celery pool never ran a slow task"
    finally:
        slow.stop()
        fast.stop()
    p50 = statistics.median(latencies)
    report(f"[fault figures] queues: add p50={p50 * 1000:.0f}ms max={max(latencies) * 1000:.0f}ms slow_backlog=3x4s")
    assert max(latencies) < 3, "no add waited behind a 4 s task"
