"""A RabbitMQ resource alarm (memory or disk, e.g. a full PVC), injected for real with rabbitmqctl.

RabbitMQ then blocks publishing connections.  The API must answer at once
(503 when nothing was written, 504 with the task id when a message was
written but not confirmed), say so in /readyz, recover by itself, and never
put a second copy of a task in the queue.
"""

from __future__ import annotations

import time

import pytest
from kombu import Connection

from testing.faults import report
from testing.servers import wait_until
from workqueue.celery_app import DEFAULT_QUEUE

pytestmark = pytest.mark.integration


def alarms(node) -> str:
    return node.ctl("eval", "rabbit_alarm:get_alarms().").strip()


def queued_ids(broker_url: str) -> list[str]:
    """Ids of every message in the task queue, taken off it (nothing consumes them otherwise)."""
    ids = []
    with Connection(broker_url) as connection:
        channel = connection.channel()
        while (message := channel.basic_get(DEFAULT_QUEUE, no_ack=True)) is not None:
            ids.append(message.headers["id"])
    return ids


def test_a_broker_alarm_is_answered_at_once_reported_and_recovered(private_rabbitmq, backend_url, app_for):
    app = app_for(private_rabbitmq.url, backend_url)
    http = app.test_client()
    try:
        accepted = [http.post("/tasks", json={"task": "add", "args": [1, 1]}).get_json()["id"]]
        private_rabbitmq.ctl("set_vm_memory_high_watermark", "0.000001")
        wait_until(lambda: "memory" in alarms(private_rabbitmq), 30, "the memory alarm")

        # The first publish after the alarm is written, then blocked: its fate is unknown.
        started = time.monotonic()
        unconfirmed = http.post("/tasks", json={"task": "add", "args": [2, 2]})
        first_seconds = time.monotonic() - started
        assert unconfirmed.status_code == 504, unconfirmed.get_data(as_text=True)
        unknown_id = unconfirmed.get_json()["error"]["task_id"]
        assert unconfirmed.headers["Location"] == f"/tasks/{unknown_id}"
        # The way to make sure it runs: repeat with this key (tests/integration/test_faults.py follows it).
        assert unconfirmed.get_json()["error"]["idempotency_key"] == unknown_id
        view = http.get(f"/tasks/{unknown_id}").get_json()
        assert view["state"] == "PENDING" and view["unconfirmed"] is True

        refused, slowest = 0, 0.0
        for i in range(5):
            started = time.monotonic()
            response = http.post("/tasks", json={"task": "add", "args": [i, 3]})
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code == 503, response.get_data(as_text=True)
            assert response.get_json()["error"]["code"] == "broker_blocked"
            assert response.headers["Retry-After"]
            refused += 1
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert "resource alarm" in ready.get_json()["checks"]["broker"]

        private_rabbitmq.ctl("set_vm_memory_high_watermark", "0.4")
        cleared = time.monotonic()

        def accepting_again() -> bool:
            response = http.post("/tasks", json={"task": "add", "args": [5, 5]})
            if response.status_code == 202:
                accepted.append(response.get_json()["id"])
                return True
            return False

        wait_until(accepting_again, 30, "the API to accept after the alarm cleared", interval=0.2)
        recovery = time.monotonic() - cleared
        wait_until(lambda: http.get("/readyz").status_code == 200, 10, "/readyz (kept a second) to turn ready")
    finally:
        app.extensions["workqueue"].close()

    in_queue = queued_ids(private_rabbitmq.url)
    # Each accepted task once; the unconfirmed one landed once the broker read it again;
    # the five refused requests wrote nothing; and no id is there twice.
    assert sorted(in_queue) == sorted([*accepted, unknown_id])
    report(
        f"[fault figures] broker-alarm: unconfirmed_504_in={first_seconds:.2f}s refused_503={refused} "
        f"slowest_503={slowest * 1000:.0f}ms recovery={recovery:.1f}s queued={len(in_queue)} duplicates=0"
    )
    assert first_seconds < 5 and slowest < 1.0
