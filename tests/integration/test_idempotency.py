"""Idempotency-Key on POST /tasks: one key, one task, however often and however concurrently it is sent."""

from __future__ import annotations

import collections
import contextlib
import re
import subprocess
import threading
import time
import uuid

import pytest
import redis
import requests

from testing.faults import report
from testing.processes import REPO, Api, Worker, service_env, wait_for_state
from testing.servers import wait_until
from testing.tally import Tally
from tests.integration import fault_tasks
from workqueue.idempotency import KEY_PREFIX

pytestmark = pytest.mark.integration


def post(url: str, body: dict, key: str | None) -> requests.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return requests.post(f"{url}/tasks", json=body, headers=headers, timeout=30)


def test_concurrent_requests_with_one_key_create_one_task(api_url):
    key = f"order-{uuid.uuid4()}"
    body = {"task": "add", "args": [20, 22]}
    gate = threading.Barrier(24)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def send() -> None:
        gate.wait()
        response = post(api_url, body, key)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=send) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = collections.Counter(r.status_code for r in answers)
    assert len(answers) == 24 and set(statuses) <= {200, 202, 409}, statuses
    assert statuses[202] == 1, statuses
    ids = {r.json()["id"] for r in answers if r.status_code in (200, 202)}
    assert len(ids) == 1
    (task_id,) = ids
    in_progress = [r for r in answers if r.status_code == 409]
    assert all(r.json()["error"]["code"] == "idempotency_key_in_use" for r in in_progress)
    assert wait_for_state(api_url, task_id, {"SUCCESS"})["result"] == 42
    # Later repeats get the original task, finished, and say it is a replay.
    again = post(api_url, {"task": "add", "kwargs": {"y": 22, "x": 20}}, key)  # the same request, spelt otherwise
    assert again.status_code == 200 and again.json()["id"] == task_id and again.json()["result"] == 42
    assert again.headers["Idempotent-Replayed"] == "true"
    replays, busy = statuses[200], len(in_progress)
    report(f"[fault figures] idempotency: concurrent=24 created=1 replayed={replays} in_progress_409={busy}")


def test_a_key_reused_for_another_request_is_refused(api_url):
    key = str(uuid.uuid4())
    assert post(api_url, {"task": "add", "args": [1, 2]}, key).status_code == 202
    reused = post(api_url, {"task": "add", "args": [1, 3]}, key)
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize("key", ["", "x" * 201, "caf\u00e9", "tab\there"])
def test_malformed_keys_are_400(api_url, key):
    response = requests.post(
        f"{api_url}/tasks",
        json={"task": "add", "args": [1, 2]},
        headers={"Idempotency-Key": key.encode("utf-8")},  # type: ignore[dict-item]
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_idempotency_key"


def test_a_client_that_got_503_retries_with_its_key_safely(private_rabbitmq, backend_url, app_for):
    app = app_for(private_rabbitmq.url, backend_url)
    http = app.test_client()
    key = str(uuid.uuid4())
    body = {"task": "mul", "args": [6, 7]}
    private_rabbitmq.stop()
    refused = http.post("/tasks", json=body, headers={"Idempotency-Key": key})
    assert refused.status_code == 503, refused.get_data(as_text=True)
    private_rabbitmq.start()
    created = http.post("/tasks", json=body, headers={"Idempotency-Key": key})
    assert created.status_code == 202, "nothing was queued by the 503: the key was free again"
    replayed = http.post("/tasks", json=body, headers={"Idempotency-Key": key})
    assert replayed.status_code == 200 and replayed.get_json()["id"] == created.get_json()["id"]
    assert app.extensions["workqueue"].queue_depth() == 1


def test_a_request_that_died_while_publishing_does_not_hold_its_key(private_rabbitmq, backend_url, tmp_path):
    """The API is SIGKILLed mid-publish: its claim stays "publishing"; once stale, the batch CLI publishes the task.

    The CLI is what a CronJob runs; it waits on the 409 instead of failing, and
    the task runs once under the key, whether or not the dead request's
    message had landed.
    """
    tally_file = tmp_path / "tally"
    # The claim goes stale after max(10 s, 10 x API_DEPENDENCY_TIMEOUT): 30 s
    # here, so the broker's restart and the worker's start (over 10 s on a
    # loaded machine) leave it fresh, and the CLI meets it "publishing".
    counted = {**fault_tasks.service_env(tally_file), "API_WORKERS": "1", "API_DEPENDENCY_TIMEOUT": "3"}
    api = Api(private_rabbitmq.url, backend_url, **counted).start().wait_ready()
    body = {"task": "counted_add", "args": [4, 5]}
    assert post(api.url, body, None).status_code == 202  # a pooled connection to write on
    private_rabbitmq.process.freeze()  # type: ignore[union-attr]

    def die_publishing() -> None:
        with contextlib.suppress(requests.RequestException):  # its API is killed under it
            post(api.url, body, "job:0")

    dying = threading.Thread(target=die_publishing)
    dying.start()
    # Killed once its claim is stored (publishing follows at once; its
    # confirm never comes). A fixed sleep lost this race on a loaded machine.
    store = redis.Redis.from_url(backend_url)
    try:
        wait_until(lambda: store.exists(KEY_PREFIX + "job:0") == 1, 30, "the request's claim")
    finally:
        store.close()
    api.process.kill()  # type: ignore[union-attr]
    dying.join(30)
    private_rabbitmq.process.kill()  # type: ignore[union-attr]  # what was written dies with the broker
    private_rabbitmq.process = None
    private_rabbitmq.start()

    worker = Worker(private_rabbitmq.url, backend_url, name="stale-claim", **counted).start().wait_ready()
    env = service_env(private_rabbitmq.url, backend_url, tmp_path / "cli", **counted)
    started = time.monotonic()
    try:
        cli = subprocess.run(
            [str(REPO / "run.sh"), "submit", "--task", "counted_add", "--args", "[4, 5]", "--count", "1",
             "--idempotency-key", "job", "--timeout", "60"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    finally:
        worker.stop()
    took = time.monotonic() - started
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "is publishing it; waiting" in cli.stdout, "the dead request's claim was seen"
    (task_id,) = re.findall(r"submitted ([0-9a-f-]{36})", cli.stdout)
    tally = Tally.read(tally_file)
    assert tally.dones[task_id] == 1, "the task ran once, under the dead request's id"
    report(f"[fault figures] stale-claim: api_killed_mid_publish=1 cli_waited={took:.1f}s ran_once=1")
