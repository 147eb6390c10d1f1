"""The dashboard in a real browser: Playwright driving Debian's Chromium against the real stack.

``run.sh api`` (auth on: a full and a read-only token, tracing on to a
receiver this test serves), ``run.sh worker`` and the session's private
RabbitMQ and Redis.  Each test does what a person would: sign in, watch a
task appear and a progress bar fill, retry, revoke, run a bulk retry, watch
a killed worker disappear; and what an attacker would: look around with a
read-only token, post from another site.  Screenshots go to the test's
temporary folder, or to ``DASHBOARD_SCREENSHOTS`` (the README's come from
``DASHBOARD_SCREENSHOTS=docs/images``).

Chromium is Debian's (``/usr/bin/chromium``, installed by ``./dev.sh test``):
``playwright install`` cannot download a browser here.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from testing.faults import report
from testing.processes import Api, Worker, wait_for_state
from testing.servers import wait_until
from tests.integration.test_tracing import OtlpReceiver

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FULL_TOKEN = "dashboard-full-" + os.urandom(12).hex()
READ_TOKEN = "dashboard-read-" + os.urandom(12).hex()
PRESENCE_INTERVAL = 0.5  # the victim worker's key expires 2 s after its last heartbeat
VIEWPORT = {"width": 1280, "height": 860}


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture(scope="module")
def dashboard(broker_url: str, backend_url: str, otlp: OtlpReceiver) -> Iterator[str]:
    """The API with auth and tracing on, and a worker of its own; the API's URL."""
    worker = Worker(broker_url, backend_url, name="dashboard", WORKER_PRESENCE_INTERVAL=str(PRESENCE_INTERVAL))
    api = Api(
        broker_url,
        backend_url,
        API_TOKENS=FULL_TOKEN,
        API_READ_TOKENS=READ_TOKEN,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    try:
        worker.start()
        api.start()
        worker.wait_ready()
        api.wait_ready()
        yield api.url
    finally:
        api.stop()
        worker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: ./dev.sh test installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def api(url: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {FULL_TOKEN}"}
    return requests.request(method, url + path, headers=headers, timeout=10, **kwargs)


def submit(url: str, task: str, **kwargs: Any) -> str:
    response = api(url, "POST", "/tasks", json={"task": task, "kwargs": kwargs})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def state_of(url: str, task_id: str) -> dict[str, Any]:
    return api(url, "GET", f"/tasks/{task_id}").json()


def signed_in(browser: Any, url: str, token: str = FULL_TOKEN) -> Any:
    """A new browser context, signed in through the form; its page is on the task list."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{url}/dashboard/")
    assert "/dashboard/login" in page.url  # nothing without a token
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/dashboard/")
    return page


@pytest.fixture(scope="module")
def failed_flaky(dashboard: str) -> dict[str, Any]:
    """Four flaky tasks that fail for good (3 retries: about 7 s), submitted once for the module."""
    since = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    ids = [submit(dashboard, "flaky", failures=5) for _ in range(4)]
    return {"ids": ids, "since": since}


def test_sign_in_and_see_a_submitted_task_appear(dashboard, browser, shots):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{dashboard}/dashboard/")
    page.fill("input[name=token]", "not-a-token-of-this-api-0000")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text().startswith("That is not a token")
    page.fill("input[name=token]", FULL_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{dashboard}/dashboard/")
    cookie = next(c for c in context.cookies() if c["name"] == "workqueue_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert cookie["expires"] > time.time() + 3600  # a lasting session, with an end
    assert FULL_TOKEN not in cookie["value"]
    page.evaluate("window.notReloaded = true")
    submit(dashboard, "add", x=1, y=2)
    task_id = submit(dashboard, "sleep", seconds=1)
    row = page.locator(f"tr[data-id='{task_id}']")
    row.wait_for(timeout=10_000)  # a poll every 2 s: no reload
    assert page.evaluate("window.notReloaded") is True
    wait_until(lambda: "SUCCESS" in row.inner_text(), 15, "the row to turn SUCCESS")
    page.screenshot(path=str(shots / "dashboard-tasks.png"))
    page.fill("input[name=id]", task_id)
    page.click("text=Find")
    page.wait_for_url(f"{dashboard}/dashboard/tasks/{task_id}")
    context.close()


def test_a_sleep_tasks_progress_bar_moves_to_done(dashboard, browser, shots, otlp):
    page = signed_in(browser, dashboard)
    task_id = submit(dashboard, "sleep", seconds=5)
    page.goto(f"{dashboard}/dashboard/tasks/{task_id}")
    bar = page.locator("#progress")
    seen: list[float] = []

    def moved(to: float) -> Any:
        def check() -> bool:
            value = float(bar.evaluate("b => b.value / b.max"))
            if not seen or value != seen[-1]:
                seen.append(value)
            return value >= to

        return check

    wait_until(moved(0.3), 15, "the progress bar to move")
    page.screenshot(path=str(shots / "dashboard-progress.png"))
    wait_until(moved(1.0), 15, "the progress bar to be full")
    assert page.locator("#progress-label").inner_text() == "done"
    assert seen == sorted(seen) and len([v for v in seen if 0 < v < 1]) >= 3  # forward, step by step
    page.locator("#state.SUCCESS").wait_for(timeout=15_000)  # then the page reloads itself, final
    assert "slept" in page.locator("#result").inner_text()
    # The trace id shown is the one the API's spans carry.
    trace_id = page.locator("dt:has-text('Trace id') + dd").inner_text().strip()
    wait_until(lambda: any(s["trace_id"] == trace_id for s in otlp.spans), 10, "the API's spans to arrive")
    assert any(s["name"] == "publish workqueue.sleep" and s["trace_id"] == trace_id for s in otlp.spans)
    page.context.close()


def test_retry_a_failed_flaky_task_and_follow_the_link_to_the_new_one(dashboard, browser, shots, failed_flaky):
    original = failed_flaky["ids"][0]
    wait_for_state(dashboard, original, {"FAILURE"}, timeout=60, headers={"Authorization": f"Bearer {FULL_TOKEN}"})
    page = signed_in(browser, dashboard)
    page.goto(f"{dashboard}/dashboard/tasks/{original}")
    assert "TransientError" in page.locator("#traceback").inner_text()  # the traceback, not only the message
    assert '"failures": 5' in page.locator("#arguments").inner_text()
    page.screenshot(path=str(shots / "dashboard-failed.png"), full_page=True)
    page.click("button:has-text('Retry')")
    link = page.locator("#retried-by")
    link.wait_for()
    new_id = link.inner_text().strip()
    assert state_of(dashboard, original)["retried_by"] == new_id
    link.click()
    page.wait_for_url(f"{dashboard}/dashboard/tasks/{new_id}")
    assert page.locator("#retry-of").inner_text().strip() == original
    assert page.locator("button:has-text('Retry')").count() == 0 or page.locator("#state").inner_text() != "FAILURE"
    page.context.close()


def test_revoke_a_running_task(dashboard, browser):
    task_id = submit(dashboard, "sleep", seconds=60)
    wait_for_state(dashboard, task_id, {"PROGRESS"}, headers={"Authorization": f"Bearer {FULL_TOKEN}"})
    page = signed_in(browser, dashboard)
    page.goto(f"{dashboard}/dashboard/tasks/{task_id}")
    page.on("dialog", lambda dialog: dialog.accept())  # "Revoke this task?"
    page.click("button:has-text('Revoke')")
    page.locator("#state.REVOKED").wait_for(timeout=15_000)
    assert state_of(dashboard, task_id)["state"] == "REVOKED"
    assert page.locator("button:has-text('Revoke')").count() == 0
    page.context.close()


def test_a_bulk_retry_from_the_dashboard_is_done_and_recorded(dashboard, browser, shots, failed_flaky):
    headers = {"Authorization": f"Bearer {FULL_TOKEN}"}
    for task_id in failed_flaky["ids"]:
        wait_for_state(dashboard, task_id, {"FAILURE"}, timeout=60, headers=headers)
    page = signed_in(browser, dashboard)
    page.goto(f"{dashboard}/dashboard/bulk")
    form = page.locator("#bulk-retry")
    form.locator("select[name=task]").select_option("flaky")
    form.locator("input[name=since]").fill(failed_flaky["since"].strftime("%Y-%m-%dT%H:%M"))
    page.on("dialog", lambda dialog: dialog.accept())
    form.locator("button[type=submit]").click()
    result = page.locator("#bulk-result")
    result.wait_for()
    for task_id in failed_flaky["ids"]:  # each failed one retried (the first maybe by the test above)
        assert state_of(dashboard, task_id).get("retried_by"), task_id
    entry = api(dashboard, "GET", "/tasks/bulk/actions?limit=1").json()["actions"][0]
    assert entry["action"] == "retry_failed" and entry["task"] == "flaky"
    assert entry["who"].startswith("dashboard sha256:") and FULL_TOKEN not in str(entry)
    assert entry["acted"] + entry["skipped"].get("already_retried", 0) >= len(failed_flaky["ids"])
    assert page.locator("#bulk-log tbody tr").first.inner_text().count("sha256:") == 1
    page.screenshot(path=str(shots / "dashboard-bulk.png"), full_page=True)
    page.goto(f"{dashboard}/dashboard/queues")
    page.locator("svg.chart polyline.succeeded").wait_for()
    page.screenshot(path=str(shots / "dashboard-queues.png"), full_page=True)
    page.context.close()


def test_a_killed_worker_disappears(dashboard, browser, shots, broker_url, backend_url):
    victim = Worker(broker_url, backend_url, name="victim", WORKER_PRESENCE_INTERVAL=str(PRESENCE_INTERVAL))
    try:
        victim.start().wait_ready()
        page = signed_in(browser, dashboard)
        page.goto(f"{dashboard}/dashboard/workers")
        row = page.locator(f"tr[data-worker='{victim.nodename}']")
        row.wait_for(timeout=10_000)
        # Its first heartbeat may come before its consumer connects ("disconnected"); the next says so.
        wait_until(lambda: "consuming" in row.inner_text(), 10, "the victim to be listed as consuming")
        assert "prefork" in row.inner_text()
        page.screenshot(path=str(shots / "dashboard-workers.png"))
        assert victim.process is not None
        killed = time.monotonic()
        victim.process.kill()  # SIGKILL of the whole process group: no goodbye
        row.wait_for(state="detached", timeout=20_000)  # its key expired; the page polls every 2 s
        gone = time.monotonic() - killed
        report(f"[dashboard figures] killed worker gone from the page after {gone:.1f} s (key expiry 2 s, poll 2 s)")
        assert gone < 2 + 2 + 6  # expiry, a poll, and room for a loaded machine
        page.context.close()
    finally:
        victim.stop()


def test_a_read_only_session_sees_no_action_and_its_posts_are_refused(dashboard, browser, shots, failed_flaky):
    task_id = submit(dashboard, "sleep", seconds=30)
    failed = failed_flaky["ids"][-1]
    wait_for_state(dashboard, failed, {"FAILURE"}, timeout=60, headers={"Authorization": f"Bearer {FULL_TOKEN}"})
    page = signed_in(browser, dashboard, READ_TOKEN)
    assert "read-only" in page.locator("header .who").inner_text()
    for path in (f"/dashboard/tasks/{task_id}", f"/dashboard/tasks/{failed}", "/dashboard/bulk", "/dashboard/"):
        page.goto(dashboard + path)
        # The only form that posts is sign-out.
        actions = [a for a in page.locator("form[method=post]").evaluate_all("fs => fs.map(f => f.action)")]
        assert [a for a in actions if not a.endswith("/dashboard/logout")] == [], path
        assert page.locator("button:has-text('Retry'), button:has-text('Revoke')").count() == 0, path
    page.goto(f"{dashboard}/dashboard/tasks/{task_id}")
    page.screenshot(path=str(shots / "dashboard-read-only.png"))
    # The server refuses what the page does not offer, even with this session's own CSRF token.
    status = page.evaluate(
        """async ([path, token]) => (await fetch(path, {method: "POST", headers: {"X-CSRF-Token": token}})).status""",
        [f"/dashboard/tasks/{task_id}/revoke", page.locator("input[name=csrf_token]").first.input_value()],
    )
    assert status == 403
    assert state_of(dashboard, task_id)["state"] in ("PENDING", "STARTED", "PROGRESS")
    api(dashboard, "DELETE", f"/tasks/{task_id}")  # done with it
    page.context.close()


class CrossSitePage:
    """Another origin on this host (another port: the same site, so a SameSite cookie still goes along)."""

    def __init__(self, html: str) -> None:
        body = html.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_forged_cross_site_post_is_refused(dashboard, browser):
    task_id = submit(dashboard, "sleep", seconds=30)
    page = signed_in(browser, dashboard)
    forged = CrossSitePage(
        f'<form id="f" method="post" action="{dashboard}/dashboard/tasks/{task_id}/revoke">'
        '<input name="csrf_token" value="guessed"></form><script>document.getElementById("f").submit()</script>'
    )
    try:
        with page.expect_response(f"{dashboard}/dashboard/tasks/{task_id}/revoke") as answer:
            page.goto(forged.url)
        assert answer.value.status == 403
        assert "Refused" in page.content()
    finally:
        forged.close()
    view = state_of(dashboard, task_id)
    assert view["state"] in ("PENDING", "STARTED", "PROGRESS") and "revoke_requested" not in view
    # The same session, from its own page, may revoke it: the refusal was the forgery's.
    page.goto(f"{dashboard}/dashboard/tasks/{task_id}")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Revoke')")
    page.locator("#state.REVOKED").wait_for(timeout=40_000)
    page.context.close()


def test_sign_out_ends_the_session(dashboard, browser):
    page = signed_in(browser, dashboard)
    cookie = next(c for c in page.context.cookies() if c["name"] == "workqueue_dashboard")
    page.click("button:has-text('Sign out')")
    page.wait_for_url(f"{dashboard}/dashboard/login")
    page.goto(f"{dashboard}/dashboard/queues")
    assert "/dashboard/login" in page.url
    # A copy of the old cookie is refused too.
    copied = requests.get(
        f"{dashboard}/dashboard/queues", cookies={cookie["name"]: cookie["value"]}, allow_redirects=False, timeout=5
    )
    assert copied.status_code == 302 and "/dashboard/login" in copied.headers["Location"]
    page.context.close()
