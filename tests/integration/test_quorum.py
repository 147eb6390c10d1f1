"""QUEUE_TYPE=quorum (the chart's default for a replicated RabbitMQ) works end to end."""

from __future__ import annotations

import pytest
from celery import states

from testing.faults import unfinished
from testing.processes import Worker
from testing.servers import wait_until

pytestmark = pytest.mark.integration


def test_quorum_queue_carries_tasks_and_retries(own_vhost, backend_url, task_client_for):
    client = task_client_for(own_vhost.url, backend_url, queue_type="quorum")
    worker = Worker(own_vhost.url, backend_url, name="quorum", QUEUE_TYPE="quorum")
    try:
        ids = [client.submit("add", {"x": i, "y": i}) for i in range(20)]  # declares the queue, before any worker
        listing = own_vhost.ctl("list_queues", "-p", own_vhost.vhost, "name", "type", "--quiet")
        assert any(line.split() == ["celery", "quorum"] for line in listing.splitlines()), listing
        worker.start().wait_ready()
        ids.append(client.submit("flaky", {"failures": 1}))  # a retry republishes to the quorum queue
        wait_until(lambda: not unfinished(client, ids), 60, "the tasks on the quorum queue", interval=0.2)
        metas = client.describe_many(ids)
        assert all(meta["state"] == states.SUCCESS for meta in metas.values())
        assert [metas[ids[i]]["result"] for i in range(20)] == [2 * i for i in range(20)]
    finally:
        worker.stop()
