"""The dashboard's pages over 100,000 recorded tasks: server time of each, through the Flask app in-process.

A private Redis gets N submission records with their index entries and
stored states (``bench.listing.populate``: 90% SUCCESS, 1% FAILURE, the rest
PENDING, over the seven catalogued task names); the API is built with auth
on, as deployed, and a browser session signed in through the form.  Each
page is then asked for ``--rounds`` times through Flask's test client, so
the time is the server's (routing, the session and its checks, Redis, the
template), not a network's.  The baseline of the same run is ``GET /healthz``
through the same client: what any request costs here.
Goal (issue 21): the task list and a task page under 100 ms.

    .venv/bin/python -m bench.dashboard [--tasks 100000] [--rounds 30]
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any

from api.app import create_app
from bench.common import history_arguments, median, percentile, private_servers
from bench.listing import populate
from workqueue.settings import Settings

GOAL_MS = 100.0
PAGES = ("task list", "task list, task=add", "task list, state=FAILURE (1%)", "task list, live poll", "task page")


def measure(broker_url: str, backend_url: str, tasks: int, rounds: int, runtime_dir: Path) -> dict[str, list[float]]:
    """Milliseconds per request of each page, ``rounds`` times, over ``tasks`` recorded tasks."""
    token = secrets.token_hex(24)
    settings = Settings(
        broker_url=broker_url, result_backend=backend_url, runtime_dir=str(runtime_dir), api_tokens=(token,)
    ).validated()
    app = create_app(settings)
    try:
        client = app.extensions["workqueue"]
        ids = populate(client, tasks)
        browser = app.test_client()
        form = browser.get("/dashboard/login").get_data(as_text=True)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)[1]
        assert browser.post("/dashboard/login", data={"token": token, "csrf_token": csrf}).status_code == 302
        listed = client.list_tasks(limit=50)
        failed = next(i for n, i in enumerate(ids) if n % 100 == 0)
        pages = {
            "baseline: GET /healthz": "/healthz",
            "task list": "/dashboard/",
            "task list, task=add": "/dashboard/?task=add",
            "task list, state=FAILURE (1%)": "/dashboard/?state=FAILURE",
            "task list, live poll": "/dashboard/?fragment=1",
            "task list, next page": f"/dashboard/?cursor={listed[1]}",
            "task page": f"/dashboard/tasks/{ids[-1]}",
            "task page, a failure": f"/dashboard/tasks/{failed}",
            "queues and throughput": "/dashboard/queues",
            "workers": "/dashboard/workers",
        }
        return {label: timed(browser, path, rounds) for label, path in pages.items()}
    finally:
        app.extensions["workqueue"].close()


def timed(browser: Any, path: str, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        answer = browser.get(path)
        answer.get_data()
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path} answered {answer.status_code}")
    return times


def summary(results: dict[str, list[float]]) -> list[str]:
    base = median(results["baseline: GET /healthz"])
    lines = [
        f"{label:32s}: p50 {median(t):7.2f} ms  p95 {percentile(t, 0.95):7.2f} ms  ({median(t) / base:6.1f}x baseline)"
        for label, t in results.items()
    ]
    worst = max(percentile(results[label], 0.95) for label in PAGES)
    verdict = "met" if worst < GOAL_MS else "NOT met"
    lines.append(f"goal: task list and task page under {GOAL_MS:.0f} ms -> worst p95 {worst:.1f} ms ({verdict})")
    return lines


def main() -> None:
    args = history_arguments(__doc__)
    with private_servers() as (broker_url, backend_url):
        started = time.monotonic()
        results = measure(broker_url, backend_url, args.tasks, args.rounds, Path("/tmp"))
        print(f"{args.tasks} tasks recorded and pages read in {time.monotonic() - started:.1f} s")
    for line in summary(results):
        print(line)


if __name__ == "__main__":
    main()
