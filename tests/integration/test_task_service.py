"""Finding tasks, waiting for them without polling, following them as events, and retrying failures.

Against a private RabbitMQ and Redis (so the list holds only this module's
tasks), the API in-process and a real worker.
"""

from __future__ import annotations

import json
import time

import pytest
import redis

from api.app import create_app
from testing import servers
from testing.faults import report
from testing.processes import Worker
from testing.servers import wait_until
from workqueue import index
from workqueue.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """(Flask test client, Redis server) with a worker running."""
    with servers.started(servers.RabbitMQ()) as node, servers.started(servers.Redis()) as redis_server:
        runtime = str(tmp_path_factory.mktemp("service"))
        app = create_app(
            Settings(broker_url=node.url, result_backend=redis_server.url, runtime_dir=runtime, api_auth="off")
        )
        worker = Worker(node.url, redis_server.url, name="service", WORKER_CONCURRENCY="3").start()
        try:
            worker.wait_ready()
            yield app.test_client(), redis_server
        finally:
            worker.stop()
            app.extensions["workqueue"].close()


@pytest.fixture(scope="module")
def failed_task(service):
    """A task that ended in FAILURE (flaky with more failures than retries: about 7 s of backoff)."""
    http, _ = service
    task_id = http.post("/tasks", json={"task": "flaky", "args": [10]}).get_json()["id"]
    view = http.get(f"/tasks/{task_id}?wait=30").get_json()
    assert view["state"] == "FAILURE", view
    return task_id


def submit(http, task: str, *args) -> str:
    response = http.post("/tasks", json={"task": task, "args": list(args)})
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["id"]


def all_pages(http, query: str) -> list[dict]:
    found, cursor = [], None
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        page = http.get(f"/tasks?{query}{suffix}").get_json()
        found += page["tasks"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def redis_calls(redis_server, command: str) -> int:
    stats = redis.Redis(port=redis_server.port).info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


# -- list ------------------------------------------------------------------------


def test_the_list_is_newest_first_filtered_and_paged(service, failed_task):
    http, _ = service
    adds = [submit(http, "add", i, i) for i in range(7)]
    for task_id in adds:
        assert http.get(f"/tasks/{task_id}?wait=20").get_json()["state"] == "SUCCESS"
    listed = all_pages(http, "task=add&limit=3")
    assert [view["id"] for view in listed] == adds[::-1], "every add once, newest first, across pages"
    assert all(
        view["state"] == "SUCCESS" and view["result"] == 2 * i for view, i in zip(listed, range(6, -1, -1), strict=True)
    )
    failures = all_pages(http, "state=FAILURE")
    assert failed_task in [view["id"] for view in failures]
    assert all(view["state"] == "FAILURE" for view in failures)
    first = http.get("/tasks?limit=2").get_json()
    assert len(first["tasks"]) == 2 and first["next_cursor"]


def test_the_list_follows_state_changes_and_forgets_expired_tasks(service):
    http, redis_server = service
    running = submit(http, "sleep", 3)
    wait_until(lambda: http.get(f"/tasks/{running}").get_json()["state"] == "PROGRESS", 20, "the sleep to run")
    assert running in [v["id"] for v in all_pages(http, "state=PROGRESS")]
    assert http.get(f"/tasks/{running}?wait=20").get_json()["state"] == "SUCCESS"
    assert running not in [v["id"] for v in all_pages(http, "state=PROGRESS")]
    assert running in [v["id"] for v in all_pages(http, "state=SUCCESS")]

    # Expiry removes a task's record and result (Redis EXPIRE); do what it does.
    gone = submit(http, "add", 1, 1)
    assert http.get(f"/tasks/{gone}?wait=20").get_json()["state"] == "SUCCESS"
    direct = redis.Redis(port=redis_server.port)
    direct.delete(f"workqueue-submitted-{gone}", f"celery-task-meta-{gone}")
    assert gone not in [v["id"] for v in all_pages(http, "task=add")]
    assert direct.zscore(index.ALL, gone) is None, "the stale index entry was dropped"


def test_the_catalogue_moved_to_its_own_route(service):
    http, _ = service
    names = {task["name"] for task in http.get("/catalogue").get_json()["tasks"]}
    assert {"add", "sleep", "flaky"} <= names
    assert "next_cursor" in http.get("/tasks").get_json()


# -- wait ------------------------------------------------------------------------


def test_wait_answers_when_the_task_is_final_without_polling(service):
    http, redis_server = service
    task_id = submit(http, "sleep", 2)
    before = redis_calls(redis_server, "mget")
    started = time.monotonic()
    view = http.get(f"/tasks/{task_id}?wait=20").get_json()
    took = time.monotonic() - started
    reads = redis_calls(redis_server, "mget") - before
    assert view["state"] == "SUCCESS"
    assert took < 10
    # One read at the start and one per stored state (STARTED, a few PROGRESS, SUCCESS);
    # polling every 50 ms would have read about 40 times.
    assert reads <= 12, reads


def test_wait_returns_the_current_state_when_time_is_up(service):
    http, _ = service
    task_id = submit(http, "sleep", 20)
    started = time.monotonic()
    view = http.get(f"/tasks/{task_id}?wait=1.5").get_json()
    took = time.monotonic() - started
    assert view["state"] in ("PENDING", "STARTED", "PROGRESS")
    assert 1.4 < took < 6
    assert http.delete(f"/tasks/{task_id}").status_code == 202  # do not keep the worker busy


def test_events_stream_state_and_progress_until_final(service):
    http, _ = service
    task_id = submit(http, "sleep", 1.5)
    response = http.get(f"/tasks/{task_id}/events")
    assert response.mimetype == "text/event-stream"
    events = [
        json.loads(line.removeprefix("data: "))
        for line in response.get_data(as_text=True).splitlines()
        if line.startswith("data: ")
    ]
    states = [event["state"] for event in events]
    assert states[-1] == "SUCCESS" and "PROGRESS" in states, states
    assert any("progress" in event for event in events)
    assert http.get("/tasks/00000000-0000-0000-0000-000000000000/events").status_code == 404


# -- retry -----------------------------------------------------------------------


def test_a_failed_task_is_retried_with_its_arguments_and_linked_both_ways(service, failed_task):
    http, _ = service
    response = http.post(f"/tasks/{failed_task}/retry")
    assert response.status_code == 202, response.get_data(as_text=True)
    new = response.get_json()
    assert new["id"] != failed_task and new["retry_of"] == failed_task and new["task"] == "flaky"
    assert response.headers["Location"] == f"/tasks/{new['id']}"
    assert http.get(f"/tasks/{failed_task}").get_json()["retried_by"] == new["id"]
    again = http.post(f"/tasks/{failed_task}/retry")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_retried"
    assert http.delete(f"/tasks/{new['id']}").status_code == 202  # it would fail again; not worth the wait


def test_a_revoked_task_can_be_retried(service):
    http, _ = service
    task_id = submit(http, "sleep", 30)
    wait_until(lambda: http.get(f"/tasks/{task_id}").get_json()["state"] == "PROGRESS", 20, "the sleep to run")
    http.delete(f"/tasks/{task_id}")
    assert http.get(f"/tasks/{task_id}?wait=10").get_json()["state"] == "REVOKED"
    retried = http.post(f"/tasks/{task_id}/retry")
    assert retried.status_code == 202
    http.delete(f"/tasks/{retried.get_json()['id']}")


def test_only_failed_or_revoked_tasks_can_be_retried(service):
    http, _ = service
    done = submit(http, "add", 2, 2)
    assert http.get(f"/tasks/{done}?wait=20").get_json()["state"] == "SUCCESS"
    refused = http.post(f"/tasks/{done}/retry")
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_failed"
    unknown = http.post("/tasks/00000000-0000-0000-0000-000000000000/retry")
    assert unknown.status_code == 404


def test_a_list_reads_names_and_times_not_the_arguments(service, failed_task):
    """GET /tasks?limit=500 used to read every listed record whole (arguments up to 256 KB each)."""
    http, redis_server = service
    numbers = [1234567.891234567 + i for i in range(10_000)]  # ~190 KB of arguments per task
    ids = [submit(http, "xsum", numbers) for _ in range(8)]
    retried = http.post(f"/tasks/{failed_task}/retry")
    assert retried.status_code in (202, 409)  # 409: an earlier test retried it already
    retry_id = http.get(f"/tasks/{failed_task}").get_json()["retried_by"]
    direct = redis.Redis(port=redis_server.port)
    records = sum(direct.strlen(f"workqueue-submitted-{task_id}") for task_id in ids)
    before = direct.info("stats")["total_net_output_bytes"]
    page = http.get("/tasks?limit=500").get_json()
    read = direct.info("stats")["total_net_output_bytes"] - before
    listed = {view["id"]: view for view in page["tasks"]}
    for task_id in [*ids, retry_id]:
        alone = http.get(f"/tasks/{task_id}").get_json()
        for field in ("task", "submitted_at", "retry_of"):
            assert listed[task_id].get(field) == alone.get(field), (task_id, field)
    assert listed[retry_id]["retry_of"] == failed_task
    assert records > 1_000_000 and read < 100_000, f"read {read} bytes to list {len(listed)} tasks"
    report(
        f"[fault figures] listing: {len(listed)} tasks, {records // 1024} KiB of arguments in their records, "
        f"{read // 1024} KiB read from Redis for the page"
    )
