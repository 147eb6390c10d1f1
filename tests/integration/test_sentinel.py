"""Redis Sentinel: the master is SIGKILLed while tasks are submitted, run and waited for.

A master, a replica and three sentinels (``testing/sentinel.py``); the API
and the worker are given the sentinels only (``REDIS_SENTINELS``).  The test
measures how long ``POST /tasks`` answered 503, checks that every accepted
task ran (the tasks' own tally), counts the results lost to asynchronous
replication, and checks that clients waiting with ``?wait=`` across the
failover get their answer.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time

import pytest
import requests

from testing import sentinel
from testing.faults import report
from testing.processes import Api, Worker
from testing.servers import wait_until
from testing.tally import Tally
from tests.integration import fault_tasks

pytestmark = pytest.mark.integration

FINAL = {"SUCCESS", "FAILURE", "REVOKED"}


def test_a_master_killed_under_load_loses_no_accepted_task(broker_url, tmp_path):
    queue = f"sentinel-{os.getpid()}"  # the session's broker, a queue of this test's own
    tally_file = tmp_path / "tally"
    with sentinel.started() as redis_set:
        env = {
            **fault_tasks.service_env(tally_file),
            "REDIS_SENTINELS": redis_set.sentinels,
            "REDIS_SENTINEL_MASTER": sentinel.MASTER_NAME,
            "TASK_ROUTES": f"counted_add={queue},counted_sleep={queue}",
        }
        # An empty RESULT_BACKEND: the settings build the sentinel:// URL from REDIS_SENTINELS.
        worker = Worker(broker_url, "", name="sentinel", WORKER_QUEUES=queue, WORKER_CONCURRENCY="4", **env)
        api = Api(broker_url, "", **env)
        statuses: list[tuple[float, int]] = []
        accepted: list[str] = []
        stop = threading.Event()

        def submit_steadily() -> None:
            session = requests.Session()
            while not stop.is_set():
                response = session.post(f"{api.url}/tasks", json={"task": "counted_add", "args": [1, 2]}, timeout=10)
                statuses.append((time.monotonic(), response.status_code))
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                else:
                    assert response.status_code == 503 and response.headers["Retry-After"], response.text
                time.sleep(0.02)

        submitter = threading.Thread(target=submit_steadily)
        try:
            worker.start().wait_ready()
            api.start().wait_ready()
            submitter.start()
            wait_until(lambda: len(accepted) >= 30, 30, "submissions to flow")
            sleeps = [
                requests.post(f"{api.url}/tasks", json={"task": "counted_sleep", "args": [3]}, timeout=10).json()["id"]
                for _ in range(3)
            ]
            accepted.extend(sleeps)
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                waits = [pool.submit(requests.get, f"{api.url}/tasks/{i}?wait=30", timeout=60) for i in sleeps]
                time.sleep(0.5)  # the waits are subscribed
                killed_at = time.monotonic()
                redis_set.master.process.kill()  # type: ignore[union-attr]
                redis_set.master.process = None
                wait_until(lambda: redis_set.master_address()[1] != redis_set.master.port, 30, "a new master")
                promoted_after = time.monotonic() - killed_at
                wait_until(lambda: statuses[-1][1] == 202 and statuses[-1][0] > killed_at, 60, "202s again")
                time.sleep(3)
                stop.set()
                submitter.join(30)
                answers = [w.result().json() for w in waits]
            wait_until(
                lambda: all(Tally.read(tally_file).dones[i] for i in accepted), 60, "every accepted task to run", 0.5
            )
            time.sleep(3)  # their last results land; a task still not final now lost its result to the failover
            left = [i for i in accepted if view(api.url, i) not in FINAL]
        finally:
            stop.set()
            api.stop()
            worker.stop()
    tally = Tally.read(tally_file)
    never_ran = [i for i in accepted if not tally.dones[i]]
    refused = [at for at, status in statuses if status == 503]
    window = (max(refused) - min(refused)) if refused else 0.0
    report(
        f"[fault figures] sentinel-failover: accepted={len(accepted)} never_ran={len(never_ran)} "
        f"results_lost={len(left)} refused_503={len(refused)} post_503_window={window:.1f}s "
        f"new_master_after={promoted_after:.1f}s waits_answered={sum(a.get('state') == 'SUCCESS' for a in answers)}/3"
    )
    assert not never_ran, "every accepted task ran"
    assert all(a.get("state") == "SUCCESS" for a in answers), answers
    assert refused, "the failover was seen as 503s"


def view(url: str, task_id: str) -> str | None:
    response = requests.get(f"{url}/tasks/{task_id}", timeout=10)
    return response.json().get("state") if response.status_code == 200 else None
