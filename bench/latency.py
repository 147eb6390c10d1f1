"""A result in one round trip: POST /tasks + one GET ?wait= vs raw Celery's ``add.delay(2, 2).get()``.

One ``add`` at a time on an idle system: a private RabbitMQ and Redis,
``run.sh api`` (with API_TOKENS set, as the chart deploys it) and
``run.sh worker``, production settings.  Each iteration times, in turns:
* baseline: what a Celery user writes, ``add.delay(2, 2).get()``: a client
  app built by workqueue's own factory (``create_celery``, role "client",
  the settings the API runs with) sends the catalogued Celery task with
  ``send_task`` and blocks in ``.get()`` (Celery's Redis result consumer),
  to the same production worker;
* ours: ``POST /tasks``, then ONE ``GET /tasks/<id>?wait=5``, which answers
  as soon as the result is stored (``TaskClient.wait``: Redis pub/sub, no
  polling); anything but SUCCESS with the right sum fails the benchmark;
* the no-op HTTP round trip (``GET /healthz``), for scale only.
The baseline and ours swap order every iteration so machine noise hits both
alike; the first 20 iterations warm up connections and pool processes and
are not counted.  Goal (issue 25): ours p50 <= 1.5 x the baseline's p50.

    .venv/bin/python -m bench.latency [--tasks 300]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import requests
from celery import Celery

from bench.common import (
    Worker,
    authorized_session,
    median,
    percentile,
    private_servers,
    running,
    secured_api,
    submit_add,
)
from workqueue import catalogue
from workqueue.celery_app import close_celery, create_celery
from workqueue.settings import Settings

WARM_UP = 20
GOAL = 1.5  # ours / raw, p50 (issue 25; issue 15's was 2)


def raw_celery(app: Celery, name: str, queue: str) -> Callable[[int], None]:
    """One ``add`` the way a Celery user writes it: ``send_task(...).get()``."""

    def run(x: int) -> None:
        # The API's kwargs shape: the catalogued task takes keyword arguments.
        result = app.send_task(name, kwargs={"x": x, "y": 1}, queue=queue).get(timeout=10)
        if result != x + 1:
            raise RuntimeError(f"raw Celery add({x}, 1) returned {result!r}")

    return run


def through_api(session: requests.Session, api_url: str) -> Callable[[int], None]:
    """One ``add`` through the API: ``POST /tasks``, then one ``GET /tasks/<id>?wait=5``."""

    def run(x: int) -> None:
        task_id = submit_add(session, api_url, x, 1)
        response = session.get(f"{api_url}/tasks/{task_id}", params={"wait": 5}, timeout=10)
        view = response.json() if response.ok else {}
        if view.get("state") != "SUCCESS" or view.get("result") != x + 1:
            # One call must be enough: a PENDING or STARTED answer means ?wait= did not wait.
            raise RuntimeError(f"GET ?wait=5 of add({x}, 1) answered {response.status_code}: {response.text[:200]}")

    return run


def healthz(session: requests.Session, api_url: str) -> Callable[[int], None]:
    def run(_: int) -> None:
        session.get(f"{api_url}/healthz", timeout=10).raise_for_status()

    return run


def timed_ms(run: Callable[[int], None], x: int) -> float:
    started = time.perf_counter()
    run(x)
    return (time.perf_counter() - started) * 1000


def measure(cases: Sequence[Callable[[int], None]], tasks: int) -> list[list[float]]:
    """Milliseconds per call of each case; all cases every iteration, order rotating."""
    samples: list[list[float]] = [[] for _ in cases]
    for i in range(WARM_UP + tasks):
        shift = i % len(cases)  # who goes first changes each iteration
        for at in (*range(shift, len(cases)), *range(shift)):
            elapsed = timed_ms(cases[at], i)
            if i >= WARM_UP:
                samples[at].append(elapsed)
    return samples


def row(label: str, values: Sequence[float]) -> str:
    figures = "".join(f"{ms:9.2f} ms" for ms in (median(values), percentile(values, 0.9), percentile(values, 0.99)))
    return f"{label:44}{figures}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args()
    with private_servers() as (broker_url, backend_url):
        api, worker = secured_api(broker_url, backend_url), Worker(broker_url, backend_url, name="bench")
        settings = Settings.from_env(api.env)  # what the API itself runs with
        add = catalogue.for_settings(settings)["add"]
        app = create_celery(settings, role="client")
        session = authorized_session()
        try:
            with running(api, worker):
                raw, ours, noop = measure(
                    [
                        raw_celery(app, add.celery_name, add.queue),
                        through_api(session, api.url),
                        healthz(session, api.url),
                    ],
                    args.tasks,
                )
        finally:
            session.close()
            close_celery(app)
    ratio = median(ours) / median(raw)
    print(f"one add at a time, {args.tasks} per case after {WARM_UP} warm-up, order rotating each iteration")
    print(f"{'':44}{'p50':>12}{'p90':>12}{'p99':>12}")
    print(row("(a) raw Celery send_task().get()", raw))
    print(row("(b) POST /tasks + GET /tasks/<id>?wait=5", ours))
    print(row("no-op GET /healthz (for scale)", noop))
    print(f"ratio p50 (b)/(a): {ratio:.2f}   (b) in no-op round trips: {median(ours) / median(noop):.1f}")
    verdict = "met" if ratio <= GOAL else "not met"
    print(f"goal: submit->result p50 <= {GOAL:.2f} x raw add.delay().get() (now {ratio:.2f}) — {verdict}")


if __name__ == "__main__":
    main()
