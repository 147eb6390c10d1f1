"""Prometheus metrics of the API.

Metric objects live at module level, as prometheus-client intends: they
register once per process.  Under gunicorn each worker is its own process,
so ``run.sh api`` sets ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` merges
what every worker wrote there.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

REQUESTS = Counter(
    "workqueue_api_requests_total", "HTTP requests by route, method and status", ["route", "method", "status"]
)
LATENCY = Histogram(
    "workqueue_api_request_duration_seconds",
    "HTTP request latency by route and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SUBMITTED = Counter("workqueue_api_tasks_submitted_total", "Tasks accepted (202) by task name", ["task"])
ENQUEUE_FAILURES = Counter(
    "workqueue_api_enqueue_failures_total", "Submissions refused because a dependency was down", ["dependency"]
)


def render() -> Response:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        payload = generate_latest(registry)
    else:
        payload = generate_latest()
    return Response(payload, mimetype=CONTENT_TYPE_LATEST)


def instrument(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        # The route template ("/tasks/<task_id>"), never the raw path: ids
        # would make one time series per task.
        route = request.url_rule.rule if request.url_rule else "unmatched"
        started = g.pop("metrics_started", None)
        if started is not None:
            LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        return response
