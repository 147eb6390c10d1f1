"""A real three-node RabbitMQ cluster with quorum queues, clients given every node.

The nodes are private (``testing/cluster.py``); the API and the worker get
the three addresses (kombu's failover URL, what ``RABBITMQ_HOST`` with
several hosts builds).  Under a steady load of submissions and runs, one
node is SIGKILLed; then every node is restarted in turn, each after the
chart's own preStop commands ran against it.  Every figure comes from the
stored states and the tasks' own tally.

What a failover can meet before the surviving nodes have cleaned up after
the dead one, the worker's exclusive control queue still owned by its dead
connection (``RESOURCE_LOCKED``), is also made certain on one node: another
connection holds the queue while the worker starts.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest
import requests

from dev.manifests import by_kind_name, containers, render
from testing import cluster as clusters
from testing.faults import Figures, make_client, unfinished
from testing.processes import Api, Worker
from testing.servers import RabbitMQ, wait_until
from testing.tally import Tally
from tests.integration import fault_tasks
from workqueue.celery_app import create_celery
from workqueue.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[clusters.Cluster]:
    with clusters.started() as started:
        yield started


class Load:
    """Clients that submit steadily over HTTP, recording each answer, while a worker runs what is accepted."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[tuple[float, int]] = []
        self.accepted: list[str] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> Load:
        self._thread.start()
        wait_until(lambda: len(self.accepted) >= 20 or bool(self.failures), 30, "submissions to flow")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self.failures, self.failures

    def _run(self) -> None:
        session = requests.Session()
        try:
            while not self._stop.is_set():
                response = session.post(f"{self.url}/tasks", json={"task": "counted_add", "args": [2, 3]}, timeout=10)
                self.statuses.append((time.monotonic(), response.status_code))
                if response.status_code == 202:
                    self.accepted.append(response.json()["id"])
                else:  # never 500, never a hang
                    assert response.status_code in (503, 504), response.text
                time.sleep(0.02)
        except BaseException as exc:
            self.failures.append(exc)

    def refused_since(self, since: float) -> list[float]:
        return [at for at, status in self.statuses if at >= since and status != 202]

    def availability(self, since: float) -> float:
        answered = [status for at, status in self.statuses if at >= since]
        return sum(status == 202 for status in answered) / max(1, len(answered))


def services(cluster: clusters.Cluster, backend_url: str, tally_file: Path) -> tuple[Worker, Api]:
    env = {**fault_tasks.service_env(tally_file), "QUEUE_TYPE": "quorum", "WORKER_LOG_TASKS": "true"}
    worker = Worker(cluster.url, backend_url, name="clustered", **env).start()
    api = Api(cluster.url, backend_url, **env).start()
    worker.wait_ready()
    api.wait_ready()
    return worker, api


def finish(worker: Worker, backend_url: str, tally_file: Path, name: str, ids: list[str]) -> Figures:
    checker = make_client(worker.env["BROKER_URL"], backend_url, tally_file.parent)
    try:
        try:
            wait_until(
                lambda: all(Tally.read(tally_file).dones[i] for i in ids), 120, "every accepted task to run", 0.5
            )
        except TimeoutError:  # where the missing tasks are, and what the worker was doing, read on failure only
            dones = Tally.read(tally_file).dones
            missing = [i for i in ids if not dones[i]]
            states = checker.describe_many(missing[:20])
            raise AssertionError(
                f"{len(missing)} of {len(ids)} accepted tasks never ran; the first: {states}\n"
                f"worker log:\n{worker.log()[-20000:]}"
            ) from None
        wait_until(lambda: all(v["state"] == "SUCCESS" for v in checker.describe_many(ids).values()), 30, "results")
        return Figures(name).measure(checker, ids, tally_file)
    finally:
        checker.close()


def test_a_node_killed_under_load_loses_no_accepted_task(cluster, backend_url, tmp_path):
    tally_file = tmp_path / "tally"
    worker, api = services(cluster, backend_url, tally_file)
    victim = cluster.nodes[0]  # first in the URL: where the clients connected
    try:
        with Load(api.url) as load:
            killed_at = time.monotonic()
            victim.process.kill()  # type: ignore[union-attr]
            victim.process = None
            gone_at = reconnected_at = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and reconnected_at is None:  # the worker's readiness file
                ready = worker.ready_file.exists()
                gone_at = gone_at or (None if ready else time.monotonic())
                reconnected_at = time.monotonic() if (ready and gone_at) else None
                time.sleep(0.05)
            wait_until(lambda: load.statuses[-1][1] == 202 and load.statuses[-1][0] > killed_at, 60, "202s again")
            time.sleep(3)
        refused = load.refused_since(killed_at)
        figures = finish(worker, backend_url, tally_file, "cluster-node-killed", load.accepted)
    finally:
        api.stop()
        worker.stop()
        victim.start()  # back from its data directory, into the cluster
        wait_until(lambda: len(cluster.running()) == 3, 60, "the killed node to rejoin")
    figures.extra = {
        "refused": len(refused),
        "refused_window": f"{(max(refused) - killed_at) if refused else 0.0:.1f}s",
        "worker_reconnected_after": f"{(reconnected_at - killed_at) if reconnected_at else float('nan'):.1f}s",
        "control_queue_locked": worker.log().count("RESOURCE_LOCKED"),  # the race the worker now reconnects on
    }
    figures.report()
    assert figures.lost == 0 and figures.completed == len(load.accepted)
    assert reconnected_at is not None, "the worker's consumer came back on another node"


def test_a_control_queue_locked_by_another_connection_delays_the_worker_and_does_not_stop_it(
    own_vhost, backend_url, task_client_for
):
    worker = Worker(own_vhost.url, backend_url, name="locked")
    settings = Settings.from_env({"BROKER_URL": own_vhost.url, "RESULT_BACKEND": backend_url}).validated()
    queue = create_celery(settings, role="client").control.mailbox.get_queue(worker.nodename)  # Celery's arguments
    holder = kombu.Connection(own_vhost.url)
    try:
        queue(holder.default_channel).declare()  # exclusive to this connection, as to the dead node's
        worker.start()
        wait_until(lambda: "RESOURCE_LOCKED" in worker.log(), 60, "the worker to meet the locked queue")
        time.sleep(2)  # Celery's restarts, under its rate limit, meanwhile
        assert worker.process.alive(), f"the worker exited:\n{worker.log()[-3000:]}"
        assert not worker.ready_file.exists(), "ready without its control queue"
    finally:
        holder.release()  # the exclusive queue goes with its connection
    try:
        worker.wait_ready()
        client = task_client_for(own_vhost.url, backend_url)
        task = client.submit("add", {"x": 2, "y": 3})
        wait_until(lambda: not unfinished(client, [task]), 30, "a task after the lock went")
        assert client.describe(task)["result"] == 5
        log = worker.log()
        assert "Connection to broker lost" in log and "Unrecoverable error" not in log
    finally:
        worker.stop()


def pre_stop_command() -> str:
    """The chart's preStop of the RabbitMQ StatefulSet, for three nodes."""
    values = {"rabbitmq": {"replicas": 3}, "config": {"queueType": "quorum"}}
    statefulset = by_kind_name(render(values))[("StatefulSet", "workqueue-message-queue")]
    (container,) = [c for c in containers(statefulset) if c["name"] == "rabbitmq"]
    argv = container["lifecycle"]["preStop"]["exec"]["command"]
    assert argv[:2] == ["sh", "-c"]
    return str(argv[2])


def test_a_rolling_restart_with_the_charts_pre_stop_loses_nothing(cluster, backend_url, tmp_path):
    command = pre_stop_command()
    assert "await_online_quorum_plus_one" in command and "drain" in command, command
    tally_file = tmp_path / "tally"
    worker, api = services(cluster, backend_url, tally_file)
    took: list[str] = []
    try:
        with Load(api.url) as load:
            began = time.monotonic()
            for node in reversed(cluster.nodes):  # a StatefulSet updates the highest ordinal first
                started = time.monotonic()
                ran = cluster.upgrade(node, command)  # what the kubelet runs before it sends SIGTERM
                assert ran.returncode == 0, f"{shlex.quote(command)}: {ran.stdout}{ran.stderr}"
                node.stop()  # SIGTERM, graceful
                node.start()
                wait_until(lambda n=node: len(cluster.running(n)) == 3, 60, "the node to rejoin")
                assert not under_maintenance(node), "a drained node leaves maintenance when it boots"
                took.append(f"{time.monotonic() - started:.0f}s")
            availability = load.availability(began)
            time.sleep(2)
        figures = finish(worker, backend_url, tally_file, "cluster-rolling-restart", load.accepted)
    finally:
        api.stop()
        worker.stop()
    figures.extra = {"nodes_restarted": 3, "per_node": ",".join(took), "submit_availability": f"{availability:.1%}"}
    figures.report()
    assert figures.lost == 0 and figures.completed == len(load.accepted)


def under_maintenance(node: RabbitMQ) -> bool:
    return node.ctl("eval", "rabbit_maintenance:is_being_drained_local_read(node()).").strip() == "true"
