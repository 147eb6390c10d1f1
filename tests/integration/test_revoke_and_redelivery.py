"""Revokes that outlive the workers that heard them, and redelivered copies of finished tasks."""

from __future__ import annotations

import time

import pytest
from kombu import Connection

from api.app import create_app
from testing.faults import report
from testing.processes import Worker
from testing.servers import wait_until
from workqueue.celery_app import DEFAULT_QUEUE

pytestmark = pytest.mark.integration


@pytest.fixture
def http(private_rabbitmq, backend_url, make_settings):
    app = create_app(make_settings(private_rabbitmq.url, backend_url), TESTING=True)
    yield app.test_client()
    app.extensions["workqueue"].close()


def state(http, task_id: str) -> str:
    return http.get(f"/tasks/{task_id}").get_json()["state"]


def test_a_revoke_reaches_a_worker_started_after_it(private_rabbitmq, backend_url, http):
    revoked = http.post("/tasks", json={"task": "add", "args": [1, 2]}).get_json()["id"]
    kept = http.post("/tasks", json={"task": "add", "args": [3, 4]}).get_json()["id"]
    assert http.delete(f"/tasks/{revoked}").status_code == 202  # no worker is running to hear the broadcast
    worker = Worker(private_rabbitmq.url, backend_url, name="late").start()
    try:
        worker.wait_ready()
        wait_until(lambda: state(http, kept) == "SUCCESS", 60, "the other task")
        wait_until(lambda: state(http, revoked) == "REVOKED", 30, "the revoked task to be recorded REVOKED")
        assert f"Task workqueue.add[{revoked}] succeeded" not in worker.log(), "the revoked task never ran"
    finally:
        worker.stop()


def test_a_running_task_stops_at_its_next_progress_report(private_rabbitmq, backend_url, http):
    worker = Worker(private_rabbitmq.url, backend_url, name="revoking").start().wait_ready()
    try:
        task_id = http.post("/tasks", json={"task": "sleep", "args": [30]}).get_json()["id"]
        wait_until(lambda: state(http, task_id) == "PROGRESS", 30, "the sleep task to report progress")
        revoked_at = time.monotonic()
        assert http.delete(f"/tasks/{task_id}").status_code == 202
        wait_until(lambda: state(http, task_id) == "REVOKED", 10, "the running task to stop", interval=0.1)
        stopped_in = time.monotonic() - revoked_at
        # The pool process is free again: the next task runs at once.
        after = http.post("/tasks", json={"task": "add", "args": [2, 2]}).get_json()["id"]
        wait_until(lambda: state(http, after) == "SUCCESS", 30, "a task after the revoked one")
        assert "revoked while running" in worker.log()
    finally:
        worker.stop()
    report(f"[fault figures] revoke-running: stopped_in={stopped_in:.2f}s progress_step=0.5s")
    assert stopped_in < 5


def test_a_redelivered_copy_of_a_succeeded_task_is_acked_without_running(private_rabbitmq, backend_url, http):
    client = http.application.extensions["workqueue"]
    worker = Worker(private_rabbitmq.url, backend_url, name="first").start().wait_ready()
    try:
        task_id = http.post("/tasks", json={"task": "add", "args": [20, 1]}).get_json()["id"]
        wait_until(lambda: state(http, task_id) == "SUCCESS", 30, "the task to succeed")
    finally:
        worker.stop()
    done_at = http.get(f"/tasks/{task_id}").get_json()["completed_at"]

    # A second copy of the same message, delivered once and not acknowledged
    # (its consumer's connection closes): RabbitMQ requeues it as redelivered,
    # as it does when a worker dies after storing a result but before its ack.
    client.publisher.publish("workqueue.add", task_id, {"x": 20, "y": 1})
    with Connection(private_rabbitmq.url) as connection:
        message = connection.channel().basic_get(DEFAULT_QUEUE, no_ack=False)
        assert message is not None and message.headers["id"] == task_id
    second = Worker(private_rabbitmq.url, backend_url, name="second").start().wait_ready()
    try:
        wait_until(lambda: "already succeeded" in second.log(), 30, "the redelivered copy to be seen")
        wait_until(lambda: client.queue_depth() == 0, 30, "the copy to be acknowledged")
        assert f"Task workqueue.add[{task_id}] succeeded" not in second.log(), "it did not run again"
    finally:
        second.stop()
    view = http.get(f"/tasks/{task_id}").get_json()
    assert view["state"] == "SUCCESS" and view["result"] == 21 and view["completed_at"] == done_at
