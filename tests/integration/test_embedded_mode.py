"""The embedded try-out mode (``./dev.sh up --embedded``) keeps the HTTP contract.

``run.sh api`` and ``run.sh worker`` on kombu's filesystem transport and the
file result store, as ``./dev.sh up`` runs them without RabbitMQ and Redis.
What needs Redis answers ``501`` with the JSON error before anything starts,
and the README lists exactly those routes; everything else answers as
documented, revoking included.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
import requests

from testing.processes import REPO, Api, Worker, wait_for_state
from testing.servers import new_server_dir, wait_until

pytestmark = pytest.mark.integration

# (method, path, as the README spells it) of every route that needs Redis; {id} is a finished task.
NEEDS_REDIS = [
    ("GET", "/tasks", "`GET /tasks`"),
    ("GET", "/tasks/{id}?wait=1", "`GET /tasks/<id>?wait=N`"),
    ("GET", "/tasks/{id}/events", "`GET /tasks/<id>/events`"),
    ("POST", "/tasks/{id}/retry", "`POST /tasks/<id>/retry`"),
]


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    """An API and a one-process worker on the embedded broker and result store."""
    data = new_server_dir("embedded")
    broker, results = f"filesystem://{data / 'broker'}", f"file://{data / 'results'}"
    worker = Worker(broker, results, name="embedded", WORKER_CONCURRENCY="1").start()
    service = Api(broker, results).start()
    try:
        worker.wait_ready()
        service.wait_ready()
        yield service.url
    finally:
        service.stop()
        worker.stop()


def submit(api: str, body: dict) -> str:
    response = requests.post(f"{api}/tasks", json=body, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_what_needs_redis_answers_501_as_json_and_the_readme_lists_it(api):
    done = submit(api, {"task": "add", "args": [2, 3]})
    wait_for_state(api, done, {"SUCCESS"}, timeout=30)
    readme = (REPO / "README.md").read_text()
    listed = " ".join(paragraph for paragraph in readme.split("\n\n") if "`501`" in paragraph)
    for method, path, spelt in NEEDS_REDIS:
        response = requests.request(method, f"{api}{path.format(id=done)}", timeout=10)
        assert response.status_code == 501, (method, path, response.status_code, response.text[:200])
        assert response.headers["Content-Type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == "not_implemented" and "needs Redis" in error["message"]
        assert " ".join(spelt.split()) in " ".join(listed.split()), f"the README's 501 list lacks {spelt}"


def test_every_other_route_answers_as_documented(api):
    task_id = submit(api, {"task": "add", "args": [2, 3]})
    view = wait_for_state(api, task_id, {"SUCCESS"}, timeout=30)
    assert view["result"] == 5 and view["completed_at"]
    assert requests.get(f"{api}/tasks/{task_id}?wait=0", timeout=10).json()["state"] == "SUCCESS"
    assert requests.delete(f"{api}/tasks/{task_id}", timeout=10).status_code == 409
    assert requests.get(f"{api}/tasks/{uuid.uuid4()}", timeout=10).status_code == 404
    assert requests.get(f"{api}/tasks/{uuid.uuid4()}/events", timeout=10).status_code == 404

    headers = {"Idempotency-Key": "embedded-1"}
    first = requests.post(f"{api}/tasks", json={"task": "mul", "args": [2, 3]}, headers=headers, timeout=10)
    again = requests.post(f"{api}/tasks", json={"task": "mul", "args": [2, 3]}, headers=headers, timeout=10)
    assert (first.status_code, again.status_code) == (202, 200) and first.json()["id"] == again.json()["id"]

    missing = requests.post(f"{api}/tasks", json={"args": [1, 2]}, timeout=10)
    assert missing.status_code == 422 and missing.json()["error"]["message"].startswith('no "task" given')
    assert requests.get(f"{api}/catalogue", timeout=10).status_code == 200
    ready = requests.get(f"{api}/readyz", timeout=10)
    # The filesystem transport counts no consumers: "unknown", never a false "no consumer".
    assert ready.status_code == 200 and ready.json()["queues"] == {"celery": "unknown"}
    for path in ("/healthz", "/metrics", "/openapi.json"):
        assert requests.get(f"{api}{path}", timeout=10).status_code == 200, path


def test_a_running_task_and_a_queued_one_are_revoked(api):
    running = submit(api, {"task": "sleep", "kwargs": {"seconds": 20}})
    wait_for_state(api, running, {"PROGRESS"}, timeout=30)
    queued = submit(api, {"task": "add", "args": [1, 1]})  # behind the sleep: the worker has one process
    for task_id in (queued, running):
        response = requests.delete(f"{api}/tasks/{task_id}", timeout=10)
        assert response.status_code == 202 and response.json()["revoke_requested"] is True
        if task_id == queued:
            # Read before the sleep is revoked: once it stops (within a progress
            # step), the worker discards the add at once and the view is final.
            assert requests.get(f"{api}/tasks/{queued}", timeout=10).json()["revoke_requested"] is True
    stopped = wait_for_state(api, running, {"REVOKED", "SUCCESS"}, timeout=10)
    assert stopped["state"] == "REVOKED" and stopped["error"]["message"] == "revoked while running"
    discarded = wait_for_state(api, queued, {"REVOKED", "SUCCESS"}, timeout=30)
    assert discarded["state"] == "REVOKED" and "revoke_requested" not in discarded
    wait_until(lambda: requests.get(f"{api}/tasks/{queued}", timeout=10).json() == discarded, 5, "a settled view")
    assert re.fullmatch(r"\d{4}-.*", discarded["completed_at"])
