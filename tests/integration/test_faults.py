"""Fault injection with real faults: SIGKILLed workers, a restarted broker, poison messages.

Each test prints a ``[fault figures]`` line: tasks submitted, completed,
lost, duplicated (at-least-once delivery means a task whose worker died
after running it may run again), and the seconds to recover.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from celery import states

from api.app import create_app
from testing import servers
from testing.faults import Figures, make_client, report, unfinished
from testing.processes import Api, Worker
from testing.servers import wait_until
from tests.integration import fault_tasks
from workqueue import catalogue
from workqueue.client import TaskClient
from workqueue.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def client(private_rabbitmq, backend_url, tmp_path):
    client = make_client(private_rabbitmq.url, backend_url, tmp_path)
    yield client
    client.close()


def pool_children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def finish_figures(figures: Figures, client: TaskClient, ids: list[str], logs: list[str]) -> None:
    metas = client.describe_many(ids)
    figures.completed = sum(m["state"] == states.SUCCESS for m in metas.values())
    figures.failed = sum(m["state"] == states.FAILURE for m in metas.values())
    figures.lost = len(ids) - figures.completed - figures.failed
    figures.count_executions(logs, set(ids))
    figures.report()


def test_worker_killed_mid_task_loses_nothing(private_rabbitmq, backend_url, client):
    rng = random.Random(20261122)
    ids = [
        client.submit("sleep", {"seconds": round(rng.uniform(0.1, 0.5), 2)})
        if i % 5 < 2
        else client.submit("add", {"x": i, "y": 1})
        for i in range(500)
    ]
    extra = {"WORKER_CONCURRENCY": "4", "TASK_MAX_DELIVERIES": "50"}
    workers = [Worker(private_rabbitmq.url, backend_url, name="victim", **extra).start().wait_ready()]
    kills = ["child", "child", "main", "child", "main", "child"]
    rng.shuffle(kills)
    performed = []
    for kind in kills:
        time.sleep(rng.uniform(0.3, 1.5))
        current = workers[-1]
        assert current.process is not None
        if kind == "child":
            children = pool_children(current.process.pid)
            if children:
                os.kill(rng.choice(children), signal.SIGKILL)  # e.g. the OOM killer picks a pool process
                performed.append(kind)
        else:
            # The main process dies; the container runtime then kills the rest,
            # and the Deployment starts a new pod.
            current.process.signal(signal.SIGKILL)
            current.process.kill()
            performed.append(kind)
            workers.append(Worker(private_rabbitmq.url, backend_url, name="victim", **extra).start().wait_ready())
    assert performed.count("main") == 2 and performed.count("child") >= 2, performed
    killed_at = time.monotonic()
    wait_until(lambda: not unfinished(client, ids), 240, "every task to finish after the kills", interval=0.5)
    figures = Figures("worker-kill", submitted=len(ids), recovery_seconds=time.monotonic() - killed_at)
    figures.extra = {"kills": ",".join(performed), "worker_incarnations": len(workers)}
    finish_figures(figures, client, ids, [w.log() for w in workers])
    assert figures.lost == 0
    assert figures.completed == len(ids), "every 202 task reaches SUCCESS"
    for worker in workers:
        worker.stop()


def test_broker_restart_on_the_same_data_loses_no_queued_task(private_rabbitmq, backend_url, client):
    started = time.monotonic()
    ids = [client.submit("add", {"x": i, "y": i}) for i in range(10_000)]
    submit_rate = len(ids) / (time.monotonic() - started)
    assert client.queue_depth() == 10_000

    private_rabbitmq.stop()  # the broker pod goes away; its PVC stays
    restart_at = time.monotonic()
    private_rabbitmq.start()
    restart_seconds = time.monotonic() - restart_at
    assert client.queue_depth() == 10_000, "durable queue, persistent messages"

    worker = Worker(private_rabbitmq.url, backend_url, name="drainer").start().wait_ready()
    drain_at = time.monotonic()
    wait_until(lambda: not unfinished(client, ids), 300, "the 10,000 tasks to drain", interval=1.0)
    figures = Figures("broker-restart-queued", submitted=len(ids), recovery_seconds=restart_seconds)
    figures.extra = {
        "submit_rate_per_s": round(submit_rate),
        "drain_rate_per_s": round(len(ids) / (time.monotonic() - drain_at)),
    }
    finish_figures(figures, client, ids, [worker.log()])
    assert figures.lost == 0 and figures.completed == len(ids)
    worker.stop()


def test_worker_and_api_reconnect_by_themselves_across_a_broker_restart(private_rabbitmq, backend_url, client):
    worker = Worker(private_rabbitmq.url, backend_url, name="survivor").start().wait_ready()
    api = Api(private_rabbitmq.url, backend_url).start().wait_ready()
    pids = (worker.process.pid, api.process.pid)  # type: ignore[union-attr]
    accepted: list[str] = []
    refused: list[float] = []
    first_accept_after_restart: list[float] = []
    restarted_at: list[float] = []
    stop = threading.Event()

    def post_steadily() -> None:
        session = requests.Session()
        while not stop.is_set():
            response = session.post(f"{api.url}/tasks", json={"task": "add", "args": [1, 2]}, timeout=10)
            if response.status_code == 202:
                accepted.append(response.json()["id"])
                if restarted_at and not first_accept_after_restart:
                    first_accept_after_restart.append(time.monotonic() - restarted_at[0])
            else:
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"]
                refused.append(time.monotonic())
            time.sleep(0.02)

    poster = threading.Thread(target=post_steadily)
    poster.start()
    try:
        time.sleep(2)
        private_rabbitmq.stop()
        time.sleep(3)
        private_rabbitmq.start()
        restarted_at.append(time.monotonic())
        wait_until(lambda: bool(first_accept_after_restart), 60, "the API to accept again")
        time.sleep(2)
    finally:
        stop.set()
        poster.join(30)
    wait_until(lambda: not unfinished(client, accepted), 120, "every accepted task to finish", interval=0.5)
    figures = Figures("broker-restart-live", submitted=len(accepted), recovery_seconds=first_accept_after_restart[0])
    figures.extra = {"refused_503": len(refused)}
    finish_figures(figures, client, accepted, [worker.log()])
    assert refused, "the outage was seen as 503s"
    assert figures.lost == 0 and figures.completed == len(accepted)
    assert (worker.process.pid, api.process.pid) == pids  # type: ignore[union-attr]
    assert worker.process.alive() and api.process.alive()  # type: ignore[union-attr]
    api.stop()
    worker.stop()


def test_poison_message_is_failed_after_capped_deliveries(private_rabbitmq, backend_url, client, make_settings):
    worker = Worker(
        private_rabbitmq.url, backend_url, name="poisoned", TASK_MAX_DELIVERIES="3", TASK_MODULES=fault_tasks.MODULE
    )
    worker.start().wait_ready()
    poison = client.submit(catalogue.load([fault_tasks.MODULE])["crash"], {})
    others = [client.submit("add", {"x": i, "y": i}) for i in range(30)]
    api = create_app(make_settings(private_rabbitmq.url, backend_url), TESTING=True)
    try:
        http = api.test_client()

        def poison_settled() -> bool:
            return http.get(f"/tasks/{poison}").get_json()["state"] in states.READY_STATES

        wait_until(poison_settled, 120, "the poison message to reach a terminal state", interval=0.5)
        view = http.get(f"/tasks/{poison}").get_json()
        assert view["state"] == states.FAILURE
        assert view["error"]["type"] == "DeliveryLimitExceeded"
        assert "delivered 4 times (limit 3)" in view["error"]["message"]
        wait_until(lambda: not unfinished(client, others), 60, "the other tasks")
    finally:
        api.extensions["workqueue"].close()
    figures = Figures("poison-message", submitted=len(others) + 1)
    finish_figures(figures, client, [poison, *others], [worker.log()])
    assert figures.completed == len(others) and figures.failed == 1 and figures.lost == 0
    assert worker.process is not None and worker.process.alive(), "the worker survived its crashing children"
    worker.stop()


def test_time_limits_stay_below_the_brokers_consumer_timeout(backend_url, tmp_path):
    defaults = Settings.from_env({})
    assert defaults.task_time_limit * 1000 < 1_800_000, "below RabbitMQ's default consumer_timeout (30 min)"

    # A broker with a short consumer_timeout and a worker whose limits sit
    # below it: a runaway task is stopped by Celery's time limit, and the
    # broker never has to cancel the consumer.
    node = servers.RabbitMQ(consumer_timeout_ms=8000)
    node.start()
    client = make_client(node.url, backend_url, tmp_path)
    worker = Worker(node.url, backend_url, name="timed", TASK_SOFT_TIME_LIMIT="2", TASK_TIME_LIMIT="4").start()
    try:
        worker.wait_ready()
        configured = node.ctl("eval", "application:get_env(rabbit, consumer_timeout).").strip()
        assert configured == "{ok,8000}"
        runaway = client.submit("sleep", {"seconds": 60})
        wait_until(lambda: not unfinished(client, [runaway]), 30, "the runaway task to be stopped")
        meta = client.describe(runaway)
        assert meta["state"] == states.FAILURE
        assert meta["error"]["type"] in {"SoftTimeLimitExceeded", "TimeLimitExceeded"}
        time.sleep(9)  # past the consumer_timeout: had the delivery stayed unacked, the broker would have acted
        after = client.submit("add", {"x": 1, "y": 1})
        wait_until(lambda: not unfinished(client, [after]), 30, "a task after the timeout window")
        assert client.describe(after)["state"] == states.SUCCESS
        log = worker.log()
        assert "PRECONDITION_FAILED" not in log and "consumer_timeout" not in log
        assert log.count("Connected to amqp://") == 1, "the worker never lost its connection"
        report(f"[fault figures] consumer-timeout: runaway={meta['error']['type']} consumer_timeout=8s limit=2s/4s")
    finally:
        worker.stop()
        client.close()
        node.destroy()
