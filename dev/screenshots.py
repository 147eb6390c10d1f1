"""The README's dashboard screenshots, taken from a local stack after a few minutes of mixed work.

Starts private RabbitMQ and Redis, ``run.sh api`` (auth on) and two
``run.sh worker``s, submits a mix of tasks for ``--minutes`` (over HTTP, and
some sent to Celery directly), then signs in with Playwright and Debian's
Chromium and takes one screenshot per page into ``--out``::

    .venv/bin/python -m dev.screenshots --minutes 4 --out docs/images

The browser tests take the same pages after their own checks
(``DASHBOARD_SCREENSHOTS``); these have more history to show.
"""

from __future__ import annotations

import argparse
import random
import secrets
import time
from pathlib import Path

import requests

from testing import servers
from testing.processes import Api, Worker
from workqueue.celery_app import create_celery
from workqueue.settings import Settings

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def load(url: str, headers: dict[str, str], producer, minutes: float) -> dict[str, str]:
    """A few tasks a second of every kind for ``minutes``; the ids worth a screenshot."""
    kept: dict[str, str] = {}
    end = time.monotonic() + minutes * 60
    while time.monotonic() < end:
        for _ in range(random.randint(2, 12)):
            task, kwargs = random.choice(
                [
                    ("add", {"x": random.randint(1, 99), "y": random.randint(1, 99)}),
                    ("mul", {"x": random.randint(1, 9), "y": random.randint(1, 9)}),
                    ("xsum", {"numbers": [random.random() for _ in range(20)]}),
                    ("pi", {"digits": random.choice([50, 500, 2000])}),
                    ("sleep", {"seconds": random.choice([0.5, 2, 4])}),
                    ("flaky", {"failures": random.choice([0, 1, 5])}),
                ]
            )
            answer = requests.post(f"{url}/tasks", json={"task": task, "kwargs": kwargs}, headers=headers, timeout=10)
            kept.setdefault(f"{task}-{kwargs.get('failures', '')}", answer.json()["id"])
        if random.random() < 0.3:
            producer.send_task("workqueue.add", args=[1, 2])  # application code that calls Celery directly
        time.sleep(random.uniform(0.5, 2.0))
    return kept


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=4)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(24)
    headers = {"Authorization": f"Bearer {token}"}
    servers.reap_leftovers()
    try:
        with servers.started(servers.RabbitMQ()) as rabbitmq, servers.started(servers.Redis()) as redis:
            services = [
                Worker(rabbitmq.url, redis.url, name="worker-a"),
                Worker(rabbitmq.url, redis.url, name="worker-b", WORKER_CONCURRENCY="1"),
                Api(rabbitmq.url, redis.url, API_TOKENS=token),
            ]
            settings = Settings(broker_url=rabbitmq.url, result_backend=redis.url, api_auth="off").validated()
            producer = create_celery(settings, role="client")
            try:
                for service in services:
                    service.start()
                for service in services:
                    service.wait_ready()
                url = services[-1].url
                kept = load(url, headers, producer, args.minutes)
                running = requests.post(
                    f"{url}/tasks", json={"task": "sleep", "kwargs": {"seconds": 20}}, headers=headers, timeout=10
                ).json()["id"]
                time.sleep(8)
                shoot(url, token, kept, running, args.out)
            finally:
                producer.close()
                for service in services:
                    service.stop()
    finally:
        servers.kill_all()


def shoot(url: str, token: str, kept: dict[str, str], running: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 820}).new_page()
        page.goto(f"{url}/dashboard/login")
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/dashboard/")
        page.screenshot(path=str(out / "dashboard-tasks.png"))
        page.goto(f"{url}/dashboard/tasks/{running}")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "dashboard-progress.png"))
        page.goto(f"{url}/dashboard/tasks/{kept['flaky-5']}")
        # Down to the traceback's first line: the frames below name this machine's paths.
        bottom = page.locator("#traceback").bounding_box()["y"] + 30
        page.set_viewport_size({"width": 1280, "height": int(bottom) + 10})
        page.screenshot(path=str(out / "dashboard-failed.png"), clip={"x": 0, "y": 0, "width": 1280, "height": bottom})
        page.set_viewport_size({"width": 1280, "height": 820})
        page.goto(f"{url}/dashboard/queues")
        page.screenshot(path=str(out / "dashboard-queues.png"))
        page.goto(f"{url}/dashboard/workers")
        page.screenshot(path=str(out / "dashboard-workers.png"))
        browser.close()


if __name__ == "__main__":
    main()
