"""What a worker logs per task: Celery's per-task INFO lines only with WORKER_LOG_TASKS."""

from __future__ import annotations

import uuid

import pytest

from testing.faults import unfinished
from testing.processes import Worker
from testing.servers import wait_until


@pytest.mark.parametrize("log_tasks", [False, True])
def test_per_task_lines_follow_the_setting_and_retries_are_always_logged(
    broker_url, backend_url, task_client_for, log_tasks
):
    # A queue of its own, so the session's shared worker runs none of these.
    queue = f"log-{uuid.uuid4().hex[:8]}"
    routes = f"add={queue},flaky={queue}"
    client = task_client_for(broker_url, backend_url, task_routes=tuple(routes.split(",")))
    worker = Worker(
        broker_url, backend_url, name="log", WORKER_QUEUES=queue, TASK_ROUTES=routes,
        WORKER_LOG_TASKS=str(log_tasks).lower(),
    ).start().wait_ready()  # fmt: skip
    try:
        ids = [client.submit("add", {"x": 1, "y": 2}), client.submit("flaky", {"failures": 1})]
        wait_until(lambda: not unfinished(client, ids), 60, "the tasks to finish")
        views = client.describe_many(ids)
        log = worker.log()
    finally:
        worker.stop()
    assert all(view and view["state"] == "SUCCESS" for view in views.values())
    assert ("succeeded in" in log) is log_tasks
    assert (f"workqueue.add[{ids[0]}] received" in log) is log_tasks
    # The retry line is Celery's too, from the same logger as "succeeded": it stays.
    assert f"workqueue.flaky[{ids[1]}] retry" in log
