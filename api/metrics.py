"""Prometheus metrics of the API.

Metric objects live at module level, as prometheus-client intends: they
register once per process.  Under gunicorn each worker is its own process;
``/metrics`` merges what every one wrote (``workqueue.prometheus``).
"""

from __future__ import annotations

import socket
import time
from http import HTTPStatus

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from workqueue.catalogue import TaskDefinition
from workqueue.prometheus import scrape_registry

REQUESTS = Counter(
    "workqueue_api_requests_total", "HTTP requests by route, method and status", ["route", "method", "status"]
)
LATENCY = Histogram(
    "workqueue_api_request_duration_seconds",
    "HTTP request latency by route and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# celery-exporter's name and labels (its dashboards read it).
SENT = Counter("celery_task_sent", "Sent when a task message is published.", ["name", "hostname", "queue_name"])
HOSTNAME = socket.gethostname()


def task_sent(definition: TaskDefinition) -> None:
    """One task accepted by the broker."""
    SENT.labels(definition.celery_name, HOSTNAME, definition.queue).inc()


ENQUEUE_FAILURES = Counter(
    "workqueue_api_enqueue_failures_total", "Submissions refused because a dependency was down", ["dependency"]
)


# Waits and event streams open (each holds a Redis pub/sub connection; capped by API_MAX_WAITS per process).
OPEN_WAITS = Gauge(
    "workqueue_api_open_waits", "Waits (?wait=) and event streams held open", multiprocess_mode="livesum"
)


# Label values come from fixed sets only: whatever path, method or status a
# client provokes, it cannot create a time series of its own (each costs
# memory in every process and in Prometheus).  Routes are the app's URL
# rules or "unmatched"; methods one of these or "other"; statuses the
# standard codes, or their class.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUSES = frozenset(int(status) for status in HTTPStatus)


def labels_of(rule: str | None, method: str, status: int) -> tuple[str, str, str]:
    """(route, method, status) label values of one request, each from a fixed set."""
    shown_status = str(status) if status in STATUSES else f"{status // 100 % 10}xx"
    return rule or "unmatched", method if method in METHODS else "other", shown_status


def render() -> Response:
    return Response(generate_latest(scrape_registry()), mimetype=CONTENT_TYPE_LATEST)


def instrument(app: Flask) -> None:
    app.extensions["workqueue"].on_watching = OPEN_WAITS.set

    @app.before_request
    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        # The route template ("/tasks/<task_id>"), never the raw path: ids
        # would make one time series per task.
        rule = request.url_rule.rule if request.url_rule else None
        route, method, status = labels_of(rule, request.method, response.status_code)
        started = g.pop("metrics_started", None)
        if started is not None:
            LATENCY.labels(route, method).observe(time.perf_counter() - started)
        REQUESTS.labels(route, method, status).inc()
        return response
