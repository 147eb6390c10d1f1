"""Fault injection with real faults: SIGKILLed workers, a restarted or killed broker, poison messages.

Each test prints a ``[fault figures]`` line: tasks submitted, completed,
lost, duplicated (a body that ran to its end twice: delivery is
at-least-once), redelivered, and the seconds to recover.  Lost and
completed come from the stored states; duplicated and redelivered from the
tasks' own tally (``testing/tally.py``), whose negative controls are the
first two tests here.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from celery import states
from kombu import Connection

from testing import servers
from testing.faults import Figures, report, unfinished
from testing.processes import Api, Worker
from testing.servers import wait_until
from testing.tally import Tally
from tests.integration import fault_tasks
from workqueue.celery_app import DEFAULT_QUEUE
from workqueue.settings import Settings

pytestmark = pytest.mark.integration

COUNTED = fault_tasks.definitions()


@pytest.fixture
def task_client(private_rabbitmq, backend_url, task_client_for):
    """The API's own way in (TaskClient), on the test's own RabbitMQ."""
    return task_client_for(private_rabbitmq.url, backend_url)


@pytest.fixture
def tally_file(tmp_path: Path) -> Path:
    return tmp_path / "tally"


def counted_worker(broker: str, backend: str, tally_file: Path, name: str, **extra: str) -> Worker:
    return Worker(broker, backend, name=name, **fault_tasks.service_env(tally_file), **extra)


def test_the_figures_count_a_duplicate_a_redelivery_and_lost_tasks(
    private_rabbitmq, backend_url, task_client, tally_file
):
    """Negative controls: each figure becomes non-zero when its fault is provoked on purpose."""
    worker = counted_worker(private_rabbitmq.url, backend_url, tally_file, "control").start().wait_ready()
    try:
        # A body that finishes and then dies before its result is stored: RabbitMQ
        # redelivers it and it runs to its end again.
        twice = task_client.submit(COUNTED["done_then_crash"], {})
        once = [task_client.submit(COUNTED["counted_add"], {"x": i, "y": 1}) for i in range(5)]
        wait_until(lambda: not unfinished(task_client, [twice, *once]), 60, "the control tasks")
        control = Figures("control-duplicate").measure(task_client, [twice, *once], tally_file)
        assert (control.duplicated, control.redelivered, control.completed, control.lost) == (1, 1, 6, 0)
    finally:
        worker.stop()

    # Tasks whose messages are gone (purged) are lost: the figure says so.
    gone = [task_client.submit(COUNTED["counted_add"], {"x": i, "y": 2}) for i in range(3)]
    with Connection(private_rabbitmq.url) as connection:
        assert connection.default_channel.queue_purge(DEFAULT_QUEUE) == 3
    sentinel = task_client.submit(COUNTED["counted_add"], {"x": 0, "y": 0})
    worker = counted_worker(private_rabbitmq.url, backend_url, tally_file, "control-lost").start().wait_ready()
    try:
        wait_until(lambda: not unfinished(task_client, [sentinel]), 60, "the task after the purge")  # queue order
        lost = Figures("control-lost").measure(task_client, gone, tally_file)
        assert (lost.lost, lost.completed) == (3, 0)
    finally:
        worker.stop()
    report(
        f"[fault figures] figure-controls: duplicated={control.duplicated} redelivered={control.redelivered} "
        f"(1 provoked each) lost={lost.lost} (3 purged)"
    )


def test_worker_killed_mid_task_loses_nothing(private_rabbitmq, backend_url, task_client, tally_file):
    rng = random.Random(20261122)
    ids = [
        task_client.submit(COUNTED["counted_sleep"], {"seconds": round(rng.uniform(0.1, 0.5), 2)})
        if i % 5 < 2
        else task_client.submit(COUNTED["counted_add"], {"x": i, "y": 1})
        for i in range(500)
    ]
    extra = {"WORKER_CONCURRENCY": "4", "TASK_MAX_DELIVERIES": "50"}

    def start() -> Worker:
        return counted_worker(private_rabbitmq.url, backend_url, tally_file, "victim", **extra).start().wait_ready()

    workers = [start()]
    kills = ["child", "child", "main", "child", "main", "child"]
    rng.shuffle(kills)
    performed = []
    for kind in kills:
        time.sleep(rng.uniform(0.3, 1.5))
        current = workers[-1]
        assert current.process is not None
        if kind == "child":
            children = servers.children(current.process.pid)
            if children:
                os.kill(rng.choice(children), signal.SIGKILL)  # e.g. the OOM killer picks a pool process
                performed.append(kind)
        else:
            # The main process dies; the container runtime then kills the rest,
            # and the Deployment starts a new pod.
            current.process.signal(signal.SIGKILL)
            current.process.kill()
            performed.append(kind)
            workers.append(start())
    assert performed.count("main") == 2 and performed.count("child") >= 2, performed
    killed_at = time.monotonic()
    wait_until(lambda: not unfinished(task_client, ids), 240, "every task to finish after the kills", interval=0.5)
    figures = Figures("worker-kill", recovery_seconds=time.monotonic() - killed_at).measure(
        task_client, ids, tally_file
    )
    figures.extra = {"kills": ",".join(performed), "worker_incarnations": len(workers)}
    figures.report()
    for worker in workers:
        worker.stop()
    assert figures.lost == 0
    assert figures.completed == len(ids), "every 202 task reaches SUCCESS"
    # A killed main process held unacknowledged messages: RabbitMQ gave them back, flagged.
    assert figures.redelivered >= 1


def test_broker_restart_on_the_same_data_loses_no_queued_task(private_rabbitmq, backend_url, task_client, tally_file):
    started = time.monotonic()
    ids = [task_client.submit(COUNTED["counted_add"], {"x": i, "y": i}) for i in range(10_000)]
    submit_rate = len(ids) / (time.monotonic() - started)
    assert task_client.queue_depth() == 10_000

    private_rabbitmq.stop()  # the broker pod goes away; its PVC stays
    restart_at = time.monotonic()
    private_rabbitmq.start()
    restart_seconds = time.monotonic() - restart_at
    assert task_client.queue_depth() == 10_000, "durable queue, persistent messages"

    worker = counted_worker(private_rabbitmq.url, backend_url, tally_file, "drainer").start().wait_ready()
    drain_at = time.monotonic()
    wait_until(lambda: not unfinished(task_client, ids), 300, "the 10,000 tasks to drain", interval=1.0)
    drain_rate = len(ids) / (time.monotonic() - drain_at)
    worker.stop()
    figures = Figures("broker-restart-queued", recovery_seconds=restart_seconds).measure(task_client, ids, tally_file)
    figures.extra = {"submit_rate_per_s": round(submit_rate), "drain_rate_per_s": round(drain_rate)}
    figures.report()
    assert figures.lost == 0 and figures.completed == len(ids)


def post_task(session: requests.Session, url: str, body: dict, key: str | None) -> requests.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return session.post(f"{url}/tasks", json=body, headers=headers, timeout=10)


def recover(
    session: requests.Session, url: str, body: dict, unconfirmed: requests.Response, within: float
) -> list[int]:
    """Follow a 504's documented recovery: repeat with the key it names until answered 200 or 202.

    Returns the status of every repeat; the last is 200 (the first copy had
    landed and was taken) or 202 (published again now).
    """
    key = unconfirmed.json()["error"]["idempotency_key"]
    deadline = time.monotonic() + within
    answers = []
    while time.monotonic() < deadline:
        response = post_task(session, url, body, key)
        answers.append(response.status_code)
        if response.status_code in (200, 202):
            assert response.json()["id"] == unconfirmed.json()["error"]["task_id"], "the same task, never a second"
            return answers
        assert response.status_code in (503, 504, 409), response.text  # still down, or another repeat publishing
        time.sleep(0.2)
    raise TimeoutError(f"no 200/202 within {within} s for key {key}")


def test_worker_and_api_reconnect_by_themselves_across_a_broker_restart(
    private_rabbitmq, backend_url, tally_file, task_client_for
):
    worker = counted_worker(private_rabbitmq.url, backend_url, tally_file, "survivor").start().wait_ready()
    api = Api(private_rabbitmq.url, backend_url, **fault_tasks.service_env(tally_file)).start().wait_ready()
    pids = (worker.process.pid, api.process.pid)  # type: ignore[union-attr]
    accepted: list[str] = []
    refused: list[float] = []
    unconfirmed: list[int] = []  # how each 504 ended: 200 (it had landed) or 202 (published again)
    first_accept_after_restart: list[float] = []
    restarted_at: list[float] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def post_steadily() -> None:
        session = requests.Session()
        body = {"task": "counted_add", "args": [1, 2]}
        try:
            while not stop.is_set():
                response = post_task(session, api.url, body, None)
                if response.status_code == 504:  # written while the broker went away: make sure it runs
                    answers = recover(session, api.url, body, response, 90)
                    unconfirmed.append(answers[-1])
                    refused.extend(time.monotonic() for code in answers if code == 503)
                    accepted.append(response.json()["error"]["task_id"])
                elif response.status_code == 202:
                    accepted.append(response.json()["id"])
                    if restarted_at and not first_accept_after_restart:
                        first_accept_after_restart.append(time.monotonic() - restarted_at[0])
                else:
                    assert response.status_code == 503, response.text
                    assert response.headers["Retry-After"]
                    refused.append(time.monotonic())
                time.sleep(0.02)
        except BaseException as exc:  # the main thread asserts on it
            failures.append(exc)
            raise

    poster = threading.Thread(target=post_steadily)
    poster.start()
    try:
        time.sleep(2)
        private_rabbitmq.stop()
        time.sleep(3)
        private_rabbitmq.start()
        restarted_at.append(time.monotonic())
        wait_until(lambda: bool(first_accept_after_restart) or bool(failures), 90, "the API to accept again")
        time.sleep(2)
    finally:
        stop.set()
        poster.join(120)
    assert not failures, failures
    wait_until(lambda: not unfinished_via(api.url, accepted), 120, "every accepted task to finish", interval=0.5)
    checker = task_client_for(private_rabbitmq.url, backend_url)
    figures = Figures("broker-restart-live", recovery_seconds=first_accept_after_restart[0])
    figures.measure(checker, accepted, tally_file)
    figures.extra = {"refused_503": len(refused), "unconfirmed_504": len(unconfirmed)}
    figures.report()
    assert refused, "the outage was seen as 503s"
    assert figures.lost == 0 and figures.completed == len(accepted)
    assert (worker.process.pid, api.process.pid) == pids  # type: ignore[union-attr]
    assert worker.process.alive() and api.process.alive()  # type: ignore[union-attr]
    api.stop()
    worker.stop()


def post_concurrently(
    pool: concurrent.futures.Executor, url: str, bodies: list[dict], keys: list[str | None] | None = None
) -> list[requests.Response]:
    keys = keys or [None] * len(bodies)
    return list(pool.map(lambda body, key: post_task(requests.Session(), url, body, key), bodies, keys))


def unfinished_via(url: str, ids: list[str]) -> list[str]:
    final = set(states.READY_STATES)
    return [i for i in ids if requests.get(f"{url}/tasks/{i}", timeout=10).json().get("state") not in final]


ROUNDS = 6  # half with the broker killed (the unconfirmed messages die with it), half resumed (they land)
PER_ROUND = 8


def test_an_unconfirmed_publish_never_loses_its_task(private_rabbitmq, backend_url, tally_file, task_client_for):
    """The broker freezes while messages are written, then is killed or resumed; every 504 is followed up.

    SIGSTOP lets the API write each message into the socket and wait for a
    confirm that never comes (504).  SIGKILL then loses what was written;
    SIGCONT lets it land.  Either way the client repeats the request with the
    key the 504 names, and every such task runs to SUCCESS, once.
    """
    # One gunicorn process: its pool of publishing connections is warmed up below.
    env = {**fault_tasks.service_env(tally_file), "API_WORKERS": "1"}
    api = Api(private_rabbitmq.url, backend_url, **env).start().wait_ready()
    # One pool process: copies run one after the other, so a second copy sees the first one's SUCCESS.
    worker = counted_worker(private_rabbitmq.url, backend_url, tally_file, "unconfirmed", WORKER_CONCURRENCY="1")
    worker.start().wait_ready()
    session = requests.Session()
    outcomes: dict[str, int] = {}  # task id -> 200 (the first copy had landed and run) or 202 (published again)
    answered: list[int] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(PER_ROUND) as pool:
            for round_number in range(ROUNDS):
                kill = round_number % 2 == 0
                bodies = [{"task": "counted_add", "args": [round_number, i]} for i in range(PER_ROUND)]
                keys = [f"round{round_number}-{i}-{uuid.uuid4()}" if i % 2 else None for i in range(PER_ROUND)]

                # Warm: PER_ROUND concurrent publishes leave as many idle connections in the pool.
                warm = post_concurrently(pool, api.url, [{"task": "counted_add", "args": [0, 0]}] * PER_ROUND)
                assert all(r.status_code == 202 for r in warm)
                private_rabbitmq.process.freeze()  # type: ignore[union-attr]
                try:
                    frozen = post_concurrently(pool, api.url, bodies, keys)
                finally:
                    if kill:
                        private_rabbitmq.process.kill()  # type: ignore[union-attr]
                        private_rabbitmq.process = None
                        private_rabbitmq.start()
                    else:
                        private_rabbitmq.process.signal_group(signal.SIGCONT)  # type: ignore[union-attr]
                answered += [r.status_code for r in frozen]
                for body, response in zip(bodies, frozen, strict=True):
                    assert response.status_code in (503, 504), response.text
                    if response.status_code == 504:
                        answers = recover(session, api.url, body, response, 90)
                        outcomes[response.json()["error"]["task_id"]] = answers[-1]
        ids = list(outcomes)
        wait_until(lambda: not unfinished_via(api.url, ids), 120, "every 504'd task to finish", interval=0.5)
        checker = task_client_for(private_rabbitmq.url, backend_url)
        figures = Figures("unconfirmed-publish").measure(checker, ids, tally_file)
    finally:
        api.stop()
        worker.stop()
    copies = Tally.read(tally_file).deliveries
    figures.extra = {
        "rounds": ROUNDS,
        "answered_504": answered.count(504),
        "answered_503": answered.count(503),
        "landed_first": sum(1 for code in outcomes.values() if code == 200),
        "published_again": sum(1 for code in outcomes.values() if code == 202),
        "delivered_more_than_once": sum(1 for i in ids if copies[i] > 1),
    }
    figures.report()
    assert answered.count(504) >= ROUNDS, "each round wrote messages the frozen broker never confirmed"
    assert figures.lost == 0 and figures.completed == len(ids)
    assert figures.duplicated == 0, "a second copy of a finished task is acknowledged without running"
    assert figures.extra["published_again"] >= 1, "killed rounds lose what was written: the repeat publishes it"


def test_poison_message_is_failed_after_capped_deliveries(
    private_rabbitmq, backend_url, task_client, app_for, tally_file
):
    # WORKER_LOG_TASKS: should the others stall, the log says which the worker received and ran.
    worker = counted_worker(
        private_rabbitmq.url, backend_url, tally_file, "poisoned", TASK_MAX_DELIVERIES="3", WORKER_LOG_TASKS="true"
    )
    worker.start().wait_ready()
    poison = task_client.submit(COUNTED["crash"], {})
    others = [task_client.submit(COUNTED["counted_add"], {"x": i, "y": i}) for i in range(30)]
    http = app_for(private_rabbitmq.url, backend_url).test_client()

    def poison_settled() -> bool:
        return http.get(f"/tasks/{poison}").get_json()["state"] in states.READY_STATES

    wait_until(poison_settled, 120, "the poison message to reach a terminal state", interval=0.5)
    view = http.get(f"/tasks/{poison}").get_json()
    assert view["state"] == states.FAILURE
    assert view["error"]["type"] == "DeliveryLimitExceeded"
    assert "delivered 4 times (limit 3)" in view["error"]["message"]
    try:
        wait_until(lambda: not unfinished(task_client, others), 60, "the other tasks")
    except TimeoutError:
        # Seen once in CI (not reproduced in 20 runs of it nor with 420 crashing
        # children under CPU load): say where the others are held.
        left = task_client.describe_many(unfinished(task_client, others))
        queue = private_rabbitmq.ctl("list_queues", "name", "messages_ready", "messages_unacknowledged")
        raise AssertionError(f"left: {left}\nqueues:\n{queue}\nworker log:\n{worker.log()[-30000:]}") from None
    figures = Figures("poison-message").measure(task_client, [poison, *others], tally_file)
    figures.report()
    assert figures.completed == len(others) and figures.failed == 1 and figures.lost == 0
    assert Tally.read(tally_file).deliveries[poison] == 4, "three deliveries ran it, the fourth failed it"
    assert worker.process is not None and worker.process.alive(), "the worker survived its crashing children"
    worker.stop()


def test_time_limits_stay_below_the_brokers_consumer_timeout(backend_url, task_client_for):
    defaults = Settings.from_env({})
    assert defaults.task_time_limit * 1000 < 1_800_000, "below RabbitMQ's default consumer_timeout (30 min)"

    # A broker with a short consumer_timeout and a worker whose limits sit
    # below it: a runaway task is stopped by Celery's time limit, and the
    # broker never has to cancel the consumer.
    node = servers.RabbitMQ(consumer_timeout_ms=8000)
    node.start()
    task_client = task_client_for(node.url, backend_url)
    worker = Worker(node.url, backend_url, name="timed", TASK_SOFT_TIME_LIMIT="2", TASK_TIME_LIMIT="4").start()
    try:
        worker.wait_ready()
        configured = node.ctl("eval", "application:get_env(rabbit, consumer_timeout).").strip()
        assert configured == "{ok,8000}"
        runaway = task_client.submit("sleep", {"seconds": 60})
        wait_until(lambda: not unfinished(task_client, [runaway]), 30, "the runaway task to be stopped")
        meta = task_client.describe(runaway)
        assert meta["state"] == states.FAILURE
        assert meta["error"]["type"] in {"SoftTimeLimitExceeded", "TimeLimitExceeded"}
        time.sleep(9)  # past the consumer_timeout: had the delivery stayed unacked, the broker would have acted
        after = task_client.submit("add", {"x": 1, "y": 1})
        wait_until(lambda: not unfinished(task_client, [after]), 30, "a task after the timeout window")
        assert task_client.describe(after)["state"] == states.SUCCESS
        log = worker.log()
        assert "PRECONDITION_FAILED" not in log and "consumer_timeout" not in log
        assert log.count("Connected to amqp://") == 1, "the worker never lost its connection"
        report(f"[fault figures] consumer-timeout: runaway={meta['error']['type']} consumer_timeout=8s limit=2s/4s")
    finally:
        worker.stop()
        task_client.close()  # before its broker goes
        node.destroy()
