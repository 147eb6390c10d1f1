"""The dashboard's access rules that keep state in Redis, bulk actions and the data behind its pages, for real.

In-process (create_app's test client) for access and the bulk endpoints,
with real ``run.sh worker`` processes where a worker is part of the
behaviour: tasks sent to Celery directly, heartbeat keys, the per-minute
counters.  The access decisions alone (the gate, the cookie, expired and
foreign sessions, CSRF) are tests/unit/test_dashboard_access.py; what a
person sees in a browser is tests/integration/test_dashboard_browser.py.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest
import requests
from celery import states

from api.auth import fingerprint
from api.dashboard import session as access
from testing.processes import Worker, wait_for_state
from testing.servers import wait_until
from tests.answers import csrf_of, sign_in
from workqueue import throughput, workers
from workqueue.celery_app import create_celery
from workqueue.client import TaskClient

pytestmark = pytest.mark.integration

FULL, READ = "full-token-" + uuid.uuid4().hex, "read-token-" + uuid.uuid4().hex
BEARER = {"Authorization": f"Bearer {FULL}"}


def secured(app_for, broker: str, backend: str):
    """The API with auth on: a full and a read-only token."""
    return app_for(broker, backend, api_auth="required", api_tokens=(FULL,), api_read_tokens=(READ,))


@pytest.fixture
def app(servers, app_for):
    return secured(app_for, *servers)


def test_state_changing_requests_need_the_csrf_token_and_the_same_origin(app):
    client = app.test_client()
    token = sign_in(client, FULL)
    task_id = TaskClient.submit(app.extensions["workqueue"], "sleep", {"seconds": 20})
    path = f"/dashboard/tasks/{task_id}/revoke"
    refused = [
        client.post(path),  # no token
        client.post(path, data={"csrf_token": "guessed"}),
        client.post(path, data={"csrf_token": token}, headers={"Origin": "http://evil.example"}),
        client.post(path, data={"csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}),
        client.post(path, data={"csrf_token": token}, headers={"Sec-Fetch-Site": "same-site"}),  # another port
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert task_id not in app.extensions["workqueue"].revocations
    done = client.post(path, data={"csrf_token": token}, headers={"Origin": "http://localhost"})
    assert done.status_code == 302 and task_id in app.extensions["workqueue"].revocations


def test_a_read_only_session_sees_no_action_and_is_refused_server_side(app):
    client = app.test_client()
    token = sign_in(client, READ)
    task_id = TaskClient.submit(app.extensions["workqueue"], "sleep", {"seconds": 20})
    page = client.get(f"/dashboard/tasks/{task_id}").get_data(as_text=True)
    assert "read-only" in page and "/revoke" not in page and "/retry" not in page
    assert "bulk-retry" not in client.get("/dashboard/bulk").get_data(as_text=True)
    for path in (f"/dashboard/tasks/{task_id}/revoke", f"/dashboard/tasks/{task_id}/retry", "/dashboard/bulk/revoke"):
        assert client.post(path, data={"csrf_token": token, "task": "sleep"}).status_code == 403, path
    assert task_id not in app.extensions["workqueue"].revocations
    # Sign-out works for it, and a copy of its cookie is no good afterwards.
    cookie = client.get_cookie(access.COOKIE, path="/dashboard").value
    assert client.post("/dashboard/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/dashboard/").status_code == 302
    copy = app.test_client()
    copy.set_cookie(access.COOKIE, cookie, path="/dashboard")
    assert copy.get("/dashboard/").status_code == 302


def test_an_open_api_opens_the_dashboard_with_csrf_still_required(servers, app_for):
    app = app_for(*servers)
    client = app.test_client()
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "anonymous" in page.get_data(as_text=True)
    task_id = app.extensions["workqueue"].submit("sleep", {"seconds": 20})
    assert client.post(f"/dashboard/tasks/{task_id}/revoke").status_code == 403
    second = app_for(*servers)  # another process: the same key
    assert second.secret_key is None
    other = second.test_client()
    other.set_cookie(access.COOKIE, client.get_cookie(access.COOKIE, path="/dashboard").value, path="/dashboard")
    token = csrf_of(other.get(f"/dashboard/tasks/{task_id}").get_data(as_text=True))
    assert token == csrf_of(client.get(f"/dashboard/tasks/{task_id}").get_data(as_text=True))
    assert other.post(f"/dashboard/tasks/{task_id}/revoke", data={"csrf_token": token}).status_code == 302


def test_pages_render_with_tasks_of_every_state(own_vhost, backend_url, app_for):
    # A broker of its own: the task must stay queued, and a worker running on the
    # session's broker (the session's `stack`, another test's) would take it.
    app = secured(app_for, own_vhost.url, backend_url)
    client = app.test_client()
    sign_in(client, FULL)
    task_client = app.extensions["workqueue"]
    queued = task_client.submit("sleep", {"seconds": 20})
    listing = client.get("/dashboard/?state=PENDING&task=sleep")
    assert listing.status_code == 200 and queued in listing.get_data(as_text=True)
    assert 'value="sleep" selected' in listing.get_data(as_text=True)  # the filters stay chosen
    assert client.get(f"/dashboard/?id={queued}").headers["Location"].endswith(f"/dashboard/tasks/{queued}")
    assert "No task with id" in client.get(f"/dashboard/?id={uuid.uuid4()}", follow_redirects=True).get_data(True)
    assert client.get("/dashboard/?cursor=not-one").status_code == 200  # a bad cursor: the first page
    fragment = client.get("/dashboard/?fragment=1").get_data(as_text=True)
    assert "<html" not in fragment and queued in fragment
    for path in ("/dashboard/queues", "/dashboard/workers", "/dashboard/bulk", f"/dashboard/tasks/{queued}"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        policy = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert answer.headers["Cache-Control"] == "no-store"
    assert client.get(f"/dashboard/tasks/{uuid.uuid4()}").status_code == 404
    with client.get("/dashboard/static/dashboard.js") as script:
        assert script.status_code == 200
    task_client.revoke(queued)


def test_bulk_retry_is_bounded_idempotent_and_recorded(app, broker_url, backend_url):
    """Failed tasks (flaky with more failures than retries: about 7 s), retried in pages of two."""
    since = dt.datetime.now(dt.UTC).isoformat()
    worker = Worker(broker_url, backend_url, name="bulk").start()
    client = app.test_client()
    try:
        worker.wait_ready()
        ids = [
            client.post("/tasks", json={"task": "flaky", "kwargs": {"failures": 5}}, headers=BEARER).get_json()["id"]
            for _ in range(3)
        ]
        api_like = app.test_client()
        for task_id in ids:
            wait_until(
                lambda t=task_id: api_like.get(f"/tasks/{t}", headers=BEARER).get_json()["state"] == states.FAILURE,
                60,
                f"{task_id} to fail",
            )
    finally:
        worker.stop()
    read_only = {"Authorization": f"Bearer {READ}"}
    body = {"task": "flaky", "since": since, "limit": 2}
    assert client.post("/tasks/bulk/retry", json=body, headers=read_only).status_code == 403
    first = client.post("/tasks/bulk/retry", json=body, headers=BEARER).get_json()
    assert first["acted"] == 2 and first["next_cursor"] and first["who"] == f"token {fingerprint(FULL)}"
    second = client.post("/tasks/bulk/retry", json={**body, "cursor": first["next_cursor"]}, headers=BEARER)
    second = second.get_json()
    assert second["acted"] == 1 and second["next_cursor"] is None
    retried = {t["id"] for t in first["tasks"] + second["tasks"]}
    assert retried == set(ids)
    for task_id in ids:
        view = client.get(f"/tasks/{task_id}", headers=BEARER).get_json()
        assert view["retried_by"] in {t["new_id"] for t in first["tasks"] + second["tasks"]}
    again = client.post("/tasks/bulk/retry", json={**body, "limit": 10}, headers=BEARER).get_json()
    assert again["acted"] == 0 and again["skipped"] == {"already_retried": 3}  # idempotent
    log = client.get("/tasks/bulk/actions?limit=3", headers=read_only).get_json()["actions"]
    assert [e["acted"] for e in log] == [0, 1, 2] and all(e["who"].startswith("token sha256:") for e in log)
    assert FULL not in str(log)
    errors = [
        ({"task": "flaky"}, 422),  # since is required
        ({"task": "nope", "since": since}, 422),
        ({"task": "flaky", "since": "yesterday"}, 422),
        ({"task": "flaky", "since": since, "limit": 501}, 422),
        ({"task": "flaky", "since": since, "cursor": "crafted"}, 400),
        ({"task": "flaky", "since": since, "extra": 1}, 422),
    ]
    for bad, status in errors:
        assert client.post("/tasks/bulk/retry", json=bad, headers=BEARER).status_code == status, bad


def test_bulk_revoke_reaches_queued_tasks_and_workers_started_later(servers, app_for):
    """Tasks queued where no worker consumes; revoked in two calls; a worker started afterwards drops them."""
    queue = f"dash-{uuid.uuid4().hex[:8]}"
    client = app_for(*servers, task_routes=(f"sleep={queue}",)).test_client()
    ids = [client.post("/tasks", json={"task": "sleep", "args": [1]}).get_json()["id"] for _ in range(3)]
    first = client.post("/tasks/bulk/revoke", json={"task": "sleep", "limit": 2}).get_json()
    assert first["acted"] == 2 and first["next_cursor"] and first["who"] == "anonymous (API_AUTH=off)"
    rest = client.post("/tasks/bulk/revoke", json={"task": "sleep", "cursor": first["next_cursor"]}).get_json()
    revoked = {t["id"] for t in first["tasks"] + rest["tasks"]}
    assert set(ids) <= revoked
    again = client.post("/tasks/bulk/revoke", json={"task": "sleep"}).get_json()
    assert not set(ids) & {t["id"] for t in again["tasks"]}  # idempotent: revoked ones are skipped
    worker = Worker(*servers, name="late", WORKER_QUEUES=queue, TASK_ROUTES=f"sleep={queue}")
    try:
        worker.start().wait_ready()
        for task_id in ids:
            wait_until(lambda t=task_id: client.get(f"/tasks/{t}").get_json()["state"] == states.REVOKED, 30, task_id)
    finally:
        worker.stop()


def test_tasks_sent_to_celery_directly_are_listed_and_can_be_retried(broker_url, backend_url, app_for):
    app = app_for(broker_url, backend_url)
    client = app.test_client()
    producer = create_celery(app.extensions["workqueue"].settings, role="client")
    worker = Worker(broker_url, backend_url, name="direct").start()
    try:
        worker.wait_ready()
        by_kwargs = producer.send_task("workqueue.add", kwargs={"x": 2, "y": 3}).id
        by_args = producer.send_task("workqueue.mul", args=[4, 5]).id
        failing = producer.send_task("workqueue.flaky", args=[5]).id
        over_http = client.post("/tasks", json={"task": "add", "args": [1, 1]}).get_json()["id"]
        for task_id, result in ((by_kwargs, 5), (by_args, 20)):
            view = wait_for_state_in(client, task_id, {states.SUCCESS})
            assert view["result"] == result
        # A task sent directly is recorded when a worker starts it: the flaky
        # one may still be queued behind the others until it has failed once.
        wait_for_state_in(client, failing, {states.RETRY, states.FAILURE}, timeout=60)
        listed = {t["id"]: t for t in client.get("/tasks?limit=50").get_json()["tasks"]}
        assert {by_kwargs, by_args, failing, over_http} <= set(listed)
        assert listed[by_args]["task"] == "mul" and listed[by_args]["via"] == "celery"
        assert listed[by_args]["submitted_at"] is None and "via" not in listed[over_http]
        record = app.extensions["workqueue"].record(by_args)
        assert record["via"] == "celery" and record["kwargs"] == {"x": 4, "y": 5}
        assert app.extensions["workqueue"].record(over_http).get("via") is None  # the API's record kept as it was
        wait_for_state_in(client, failing, {states.FAILURE}, timeout=60)
        retried = client.post(f"/tasks/{failing}/retry")
        assert retried.status_code == 202 and retried.get_json()["retry_of"] == failing
        assert app.extensions["workqueue"].record(retried.get_json()["id"])["kwargs"] == {"failures": 5}
        # Listed once: the retries of the failing task (same id) added no second entry.
        ids = [t["id"] for t in client.get("/tasks?task=flaky&limit=500").get_json()["tasks"]]
        assert ids.count(failing) == 1
    finally:
        worker.stop()
        producer.close()


def wait_for_state_in(client: Any, task_id: str, wanted: set[str], timeout: float = 30) -> dict:
    seen: dict = {}

    def reached() -> bool:
        nonlocal seen
        seen = client.get(f"/tasks/{task_id}").get_json()
        return seen.get("state") in wanted

    wait_until(reached, timeout, f"{task_id} to reach {wanted}")
    return seen


def test_workers_are_listed_while_alive_and_gone_at_once_after_a_clean_stop(broker_url, backend_url, task_client_for):
    client = task_client_for(broker_url, backend_url)
    presence = workers.Presence(client.celery.backend)
    worker = Worker(
        broker_url, backend_url, name="present", WORKER_PRESENCE_INTERVAL="0.5", WORKER_QUEUES="celery,extra"
    )
    try:
        worker.start().wait_ready()
        wait_until(
            lambda: any(w["hostname"] == worker.nodename and w["connected"] for w in presence.live()),
            10,
            "its heartbeat key, consuming",
        )
        (info,) = [w for w in presence.live() if w["hostname"] == worker.nodename]
        assert info["queues"] == ["celery", "extra"] and info["pool"] == "prefork" and info["connected"]
        assert info["expires_in"] == 2 and time.time() - info["heartbeat_at"] < 2
        assert worker.stop() == 0
        assert worker.nodename not in {w["hostname"] for w in presence.live()}  # deleted on the way out
    finally:
        worker.stop()


def test_the_rolling_counters_count_outcomes_and_queue_waits(stack, servers, task_client_for):
    api, _ = stack
    client = task_client_for(*servers)
    reader = throughput.Throughput(client.celery.backend, client.celery.backend.key_t("workqueue-index"))
    before, waits_before = reader.read(minutes=2)
    ids = [
        requests.post(f"{api.url}/tasks", json={"task": "add", "args": [i, i]}, timeout=5).json()["id"]
        for i in range(5)
    ]
    for task_id in ids:
        wait_for_state(api.url, task_id, {states.SUCCESS})
    after, waits_after = reader.read(minutes=2)
    assert sum(m.succeeded for m in after) - sum(m.succeeded for m in before[1:]) >= 5
    assert sum(m.submitted for m in after) - sum(m.submitted for m in before[1:]) >= 5
    counted = waits_after["celery"]["count"] - waits_before.get("celery", {"count": 0})["count"]
    assert counted >= 5 and 0 <= waits_after["celery"]["p50"] <= waits_after["celery"]["p95"]
