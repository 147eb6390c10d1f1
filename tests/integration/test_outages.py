"""Broker or Redis down: the API answers 503 + Retry-After quickly, then recovers by itself.

The faults are real: the test's own RabbitMQ node / Redis server is stopped
and started again; the API instance is never rebuilt.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis

from testing import faults, servers
from testing.faults import report
from testing.processes import Worker
from testing.servers import wait_until
from testing.tally import Tally
from tests.integration import fault_tasks

pytestmark = pytest.mark.integration

# docs/api.md promises "about a second"; the bound is generous to absorb a loaded CI machine.
HANG_BOUND_SECONDS = 3.0
COUNTED = fault_tasks.definitions()


def state(http, task_id: str) -> str:
    return http.get(f"/tasks/{task_id}").get_json()["state"]


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_unavailable(response, elapsed):
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "unavailable"
    assert int(response.headers["Retry-After"]) > 0
    assert elapsed < HANG_BOUND_SECONDS, f"answer took {elapsed:.2f} s"


def test_broker_down_gives_503_and_recovers(private_rabbitmq, backend_url, app_for):
    client = app_for(private_rabbitmq.url, backend_url).test_client()
    assert client.post("/tasks", json={"task": "add", "args": [1, 1]}).status_code == 202

    private_rabbitmq.stop()
    response, elapsed = timed(lambda: client.post("/tasks", json={"task": "add", "args": [1, 2]}))
    assert_unavailable(response, elapsed)
    report(f"[fault figures] broker-down: POST /tasks -> 503 in {elapsed * 1000:.0f} ms")
    ready, elapsed = timed(lambda: client.get("/readyz"))
    assert ready.status_code == 503 and ready.get_json()["checks"]["broker"].startswith("unavailable")
    assert elapsed < HANG_BOUND_SECONDS

    private_rabbitmq.start()
    started = time.monotonic()
    response = client.post("/tasks", json={"task": "add", "args": [1, 3]})
    assert response.status_code == 202, response.get_data(as_text=True)
    wait_until(lambda: client.get("/readyz").status_code == 200, 10, "/readyz (kept a second) to turn ready")
    report(f"[fault figures] broker-back: first POST accepted {time.monotonic() - started:.2f} s after restart")


def test_result_store_down_gives_503_and_recovers(broker_url, private_redis, app_for):
    client = app_for(broker_url, private_redis.url).test_client()
    accepted = client.post("/tasks", json={"task": "add", "args": [1, 1]})
    assert accepted.status_code == 202

    private_redis.stop()
    response, elapsed = timed(lambda: client.post("/tasks", json={"task": "add", "args": [1, 2]}))
    assert_unavailable(response, elapsed)
    response, elapsed = timed(lambda: client.get(accepted.headers["Location"]))
    assert_unavailable(response, elapsed)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["result_backend"].startswith("unavailable")

    private_redis.start()  # new empty server on the same port: recovery, not persistence
    assert client.post("/tasks", json={"task": "add", "args": [1, 3]}).status_code == 202
    wait_until(lambda: client.get("/readyz").status_code == 200, 10, "/readyz (kept a second) to turn ready")


def test_tasks_finishing_while_redis_is_down_lose_nothing(private_rabbitmq, task_client_for, tmp_path):
    """Redis stops while tasks run; the worker keeps their results until it is back (AOF, as on a PVC)."""
    redis_server = servers.Redis(appendonly=True)
    tally_file = tmp_path / "tally"
    with servers.started(redis_server):
        client = task_client_for(private_rabbitmq.url, redis_server.url)
        worker = Worker(
            private_rabbitmq.url, redis_server.url, name="redis-outage", WORKER_CONCURRENCY="4",
            **fault_tasks.service_env(tally_file),
        )  # fmt: skip
        try:
            worker.start().wait_ready()
            ids = [client.submit(COUNTED["counted_sleep"], {"seconds": 2}) for _ in range(4)]
            ids += [client.submit(COUNTED["counted_add"], {"x": i, "y": i}) for i in range(20)]
            wait_until(
                lambda: sum(v["state"] == "STARTED" for v in client.describe_many(ids).values()) >= 2,
                30,
                "the sleep tasks to run",
            )
            redis_server.stop()  # the sleeps finish during the outage: their results cannot be stored
            time.sleep(5)
            down_for = 5.0
            redis_server.start()
            wait_until(lambda: not faults.unfinished(client, ids), 120, "every task to finish", interval=0.5)
            figures = faults.Figures("redis-outage", recovery_seconds=down_for).measure(client, ids, tally_file)
            views = client.describe_many(ids)
        finally:
            worker.stop()
    figures.report()
    assert figures.lost == 0
    assert [views[i]["result"] for i in ids[4:]] == [2 * i for i in range(20)]


# How each fault is made, and undone, on a real Redis.
REFUSALS = {
    # The chart's own setting: maxmemory with noeviction, below what is used.
    "full": (
        lambda r: (r.config_set("maxmemory-policy", "noeviction"), r.config_set("maxmemory", 1)),
        lambda r: r.config_set("maxmemory", 0),
    ),
    # What a client meets after a failover: a replica (of a master it cannot reach, so it keeps its data).
    "read_only": (lambda r: r.replicaof("127.0.0.1", servers.free_port()), lambda r: r.replicaof("NO", "ONE")),
}


@pytest.mark.parametrize(
    ("fault", "hold_seconds", "worker_limits"),
    [
        ("full", 4, {}),
        ("read_only", 4, {}),
        # Longer than the tasks' time limit: the worker must give their messages back, not acknowledge them.
        ("full", 12, {"TASK_SOFT_TIME_LIMIT": "6", "TASK_TIME_LIMIT": "8"}),
    ],
    ids=["full", "read-only", "full-past-the-time-limit"],
)
def test_a_full_or_read_only_redis_is_an_outage_that_loses_no_task(
    fault, hold_seconds, worker_limits, broker_url, app_for, tmp_path
):
    """Redis answers, but refuses writes while tasks are submitted and finishing; then it takes them again."""
    queue = f"refusing-{fault}-{hold_seconds}-{os.getpid()}"
    routes = (f"counted_sleep={queue}", f"counted_add={queue}")
    tally_file = tmp_path / "tally"
    make_fault, undo_fault = REFUSALS[fault]
    with servers.started(servers.Redis()) as store:
        worker = Worker(
            broker_url, store.url, name=f"refusing-{fault}", WORKER_QUEUES=queue, TASK_ROUTES=",".join(routes),
            WORKER_CONCURRENCY="2", **fault_tasks.service_env(tally_file), **worker_limits,
        )  # fmt: skip
        app = app_for(broker_url, store.url, task_modules=(fault_tasks.MODULE,), task_routes=routes)
        statuses: list[tuple[float, int, str | None]] = []
        accepted: list[str] = []
        stop = threading.Event()

        def submit_steadily() -> None:
            http = app.test_client()
            while not stop.is_set():
                response = http.post("/tasks", json={"task": "counted_add", "args": [1, 2]})
                body = response.get_json()
                statuses.append((time.monotonic(), response.status_code, body.get("error", {}).get("code")))
                if response.status_code == 202:
                    accepted.append(body["id"])
                else:
                    assert response.headers.get("Retry-After"), body
                time.sleep(0.02)

        submitter = threading.Thread(target=submit_steadily)
        try:
            worker.start().wait_ready()
            http = app.test_client()
            sleeps = [http.post("/tasks", json={"task": "counted_sleep", "args": [2.5]}).get_json()["id"] for _ in "ab"]
            accepted += sleeps
            submitter.start()
            wait_until(lambda: all(state(http, i) == "STARTED" for i in sleeps), 30, "the sleeps to start")
            wait_until(lambda: len(accepted) >= 15, 30, "submissions to flow")

            redis_client = redis.Redis.from_url(store.url)
            make_fault(redis_client)
            faulted_at = time.monotonic()
            wait_until(lambda: http.get("/readyz").status_code == 503, 10, "/readyz to turn unready")
            unready_after = time.monotonic() - faulted_at
            ready = http.get("/readyz").get_json()
            assert ready["checks"]["result_backend"].startswith(fault.replace("_", "-")), ready
            time.sleep(hold_seconds)  # the sleeps finish meanwhile: their results cannot be stored yet
            undo_fault(redis_client)
            restored_at = time.monotonic()
            wait_until(lambda: http.get("/readyz").status_code == 200, 10, "/readyz to turn ready again")
            wait_until(lambda: statuses[-1][1] == 202, 10, "submissions to be accepted again")
            stop.set()
            submitter.join(10)
            wait_until(lambda: not faults.unfinished(app.extensions["workqueue"], accepted), 120, "every task")
            figures = faults.Figures(f"redis-{fault}-{hold_seconds}s").measure(
                app.extensions["workqueue"], accepted, tally_file
            )
        finally:
            stop.set()
            if submitter.is_alive():
                submitter.join(10)
            worker.stop()

    during = [(status, code) for at, status, code in statuses if faulted_at + 0.5 < at < restored_at]
    refused = [code for status, code in during if status == 503]
    assert during and len(refused) == len(during), f"every submission during the fault is refused: {during[:5]}"
    assert set(refused) == {f"result_store_{fault}"}, set(refused)
    assert not [s for _, s, _ in statuses if s not in (202, 503)], "only 202 or 503, never a 5xx of another kind"
    delivered = set(Tally.read(tally_file).deliveries)
    assert delivered <= set(accepted), "a refused submission queued nothing"
    figures.extra = {"refused_503": len(refused), "unready_after": f"{unready_after:.2f}s", "held": f"{hold_seconds}s"}
    figures.report()
    assert figures.lost == 0 and figures.completed == len(accepted), "every accepted task ends with its final state"
    if worker_limits:
        # The sleeps' results could not be stored before their time limit: their
        # messages went back to the queue and ran again once Redis took writes.
        assert figures.redelivered >= 1
