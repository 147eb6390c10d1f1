"""Prometheus metrics move when tasks run: per-task counters from prefork children, queue depth from the broker."""

from __future__ import annotations

import re

import pytest
import requests
from celery import states

from tests.faults import Client
from tests.processes import Worker
from tests.servers import free_port, wait_until

pytestmark = pytest.mark.integration


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format (0 when absent)."""
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(f"{name}{{{label_text}}}" if labels else name) + r" ([0-9.e+-]+)"
    match = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_worker_metrics_count_tasks_and_read_queue_depth(private_rabbitmq, backend_url, tmp_path):
    client = Client(private_rabbitmq.url, backend_url, tmp_path)
    port = free_port()
    worker = Worker(private_rabbitmq.url, backend_url, name="metered", WORKER_METRICS_PORT=str(port))
    try:
        queued = [client.submit("add", x=i, y=1) for i in range(7)]
        worker.start().wait_ready()
        url = f"http://127.0.0.1:{port}/metrics"
        ids = [*queued, client.submit("flaky", failures=1), client.submit("flaky", failures=10)]
        wait_until(lambda: not client.unfinished(ids), 60, "the tasks to finish", interval=0.2)
        metas = client.states(ids)
        assert [metas[i]["status"] for i in ids[-2:]] == [states.SUCCESS, states.FAILURE]
        text = requests.get(url, timeout=10).text
        assert sample(text, "workqueue_worker_tasks_total", task="add", outcome="success") == 7
        assert sample(text, "workqueue_worker_tasks_total", task="flaky", outcome="success") == 1
        assert sample(text, "workqueue_worker_tasks_total", task="flaky", outcome="failure") == 1
        assert sample(text, "workqueue_worker_tasks_total", task="flaky", outcome="retried") == 4  # 1 + 3 retries
        assert sample(text, "workqueue_worker_task_runtime_seconds_count", task="add") == 7
        assert sample(text, "workqueue_queue_messages", queue="celery") == 0
        assert "workqueue_queue_messages" in text
    finally:
        worker.stop()
        client.close()


def test_queue_depth_is_read_from_the_broker(private_rabbitmq, backend_url, tmp_path):
    client = Client(private_rabbitmq.url, backend_url, tmp_path)
    port = free_port()
    # A worker that consumes nothing (another queue) still reports the depth of the task queue.
    worker = Worker(private_rabbitmq.url, backend_url, name="observer", WORKER_METRICS_PORT=str(port))
    try:
        worker.start("-Q", "elsewhere").wait_ready()
        for i in range(5):
            client.submit("add", x=i, y=i)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert sample(text, "workqueue_queue_messages", queue="celery") == 5
    finally:
        worker.stop()
        client.close()
