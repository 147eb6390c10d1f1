"""The chart's Grafana dashboard, written from this description.

``charts/workqueue/dashboards/workqueue.json`` is what the chart ships (a
ConfigMap for Grafana's dashboard sidecar when ``metrics.dashboards.enabled``);
it is generated here so that its queries stay readable.  Regenerate it after
changing this file::

    .venv/bin/python -m dev.dashboard

``tests/k8s/test_observability.py`` fails when the two disagree, and
``tests/integration/test_dashboards.py`` checks that every metric a query
reads is one the API or a worker really serves.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from dev.manifests import CHART

DASHBOARD = CHART / "dashboards" / "workqueue.json"
UID = "workqueue"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana variables of the queries: every series carries namespace (added by
# Prometheus from the ServiceMonitor's targets); the task series carry queue_name.
NS = 'namespace=~"$namespace"'
NSQ = 'namespace=~"$namespace", queue_name=~"$queue_name"'
RATE = "$__rate_interval"


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def _panel(
    title: str, unit: str, targets: list[tuple[str, str]], description: str = "", **extra: Any
) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }
    panel.update(extra)
    return panel


def _row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def _quantiles(metric: str, by: str, selector: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def panels() -> list[dict[str, Any]]:
    states = ["received", "started", "succeeded", "failed", "retried", "revoked"]
    throughput = [(f"sum(rate(celery_task_sent_total{{{NSQ}}}[{RATE}]))", "sent")]
    throughput += [(f"sum(rate(celery_task_{s}_total{{{NSQ}}}[{RATE}]))", s) for s in states]
    failed = f"sum by (name) (rate(celery_task_failed_total{{{NSQ}}}[{RATE}]))"
    succeeded = f"sum by (name) (rate(celery_task_succeeded_total{{{NSQ}}}[{RATE}]))"
    # A task that has failed but never succeeded has no succeeded series: 0 then, not no ratio.
    ratio = f"{failed} / ({failed} + ({succeeded} or 0 * {failed}))"
    by_exception = f"sum by (name, exception) (rate(celery_task_failed_total{{{NSQ}}}[{RATE}]))"
    api_requests = f"sum by (route, method) (rate(workqueue_api_requests_total{{{NS}}}[{RATE}]))"
    return [
        _row("Tasks"),
        _panel("Task throughput by state", "ops", throughput,
               "Tasks per second: sent by the API, then received, started, succeeded, failed, retried, revoked "
               "by the workers."),
        _panel("Failure ratio by task", "percentunit", [(ratio, "{{name}}")],
               "Failed / (succeeded + failed) executions, per task name.", fieldConfig={
                   "defaults": {"unit": "percentunit", "min": 0, "max": 1}, "overrides": []}),
        _panel("Failures by exception", "ops",
               [(by_exception, "{{name}} {{exception}}")]),
        _panel("Task runtime", "s", _quantiles("celery_task_runtime", "name", NSQ),
               "Quantiles of the runtime of successful tasks, per task name."),
        _panel("Queue wait time", "s", _quantiles("workqueue_task_queue_wait_seconds", "queue_name", NSQ),
               "From submission (the API's clock) to the start of the task (the worker's clock), "
               "first attempts only."),
        _row("Queues and workers"),
        _panel("Queue length", "short",
               [(f"max by (queue_name) (celery_queue_length{{{NSQ}}})", "{{queue_name}}")],
               "Messages ready in each queue, read from the broker by every worker at scrape time (max over workers)."),
        _panel("Consumers per queue", "short",
               [(f"max by (queue_name) (celery_active_consumer_count{{{NSQ}}})", "{{queue_name}}")]),
        _panel("Workers up", "short", [(f"sum(celery_worker_up{{{NS}}})", "up"),
                                        (f"count(celery_worker_up{{{NS}}})", "reporting")],
               "Workers connected and consuming, out of those that report."),
        _panel("Tasks active", "short",
               [(f"sum by (hostname) (celery_worker_tasks_active{{{NS}}})", "{{hostname}}")],
               "Tasks each worker is running now."),
        _row("API"),
        _panel("API request rate", "reqps",
               [(api_requests, "{{method}} {{route}}")]),
        _panel("API request latency", "s", _quantiles("workqueue_api_request_duration_seconds", "route", NS)),
        _panel("API errors", "reqps",
               [(f'sum by (route, status) (rate(workqueue_api_requests_total{{{NS}, status=~"5.."}}[{RATE}]))',
                 "{{status}} {{route}}"),
                (f'sum by (route, status) (rate(workqueue_api_requests_total{{{NS}, status=~"4.."}}[{RATE}]))',
                 "{{status}} {{route}}")],
               "5xx (the API or a dependency failed) and 4xx (the client's request was refused) responses."),
    ]  # fmt: skip


def _layout(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows full width; panels two per line, 12 units wide and 8 high."""
    y, x = 0, 0
    for pid, item in enumerate(items, start=1):
        item["id"] = pid
        if item["type"] == "row":
            y += 8 if x else 0
            item["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y, x = y + 1, 0
        else:
            item["gridPos"] = {"h": 8, "w": 12, "x": x, "y": y}
            x = 12 - x
            y += 8 if x == 0 else 0
    return items


def _query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID,
        "title": "Workqueue",
        "description": "Tasks, queues, workers and the API of workqueue (charts/workqueue).",
        "tags": ["workqueue", "celery"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                _query_variable("namespace", "Namespace", "label_values(celery_worker_up, namespace)"),
                _query_variable(
                    "queue_name", "Queue", 'label_values(celery_queue_length{namespace=~"$namespace"}, queue_name)'
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": _layout(panels()),
    }


def text() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    DASHBOARD.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD.write_text(text())
    print(f"wrote {DASHBOARD.relative_to(CHART.parent.parent)}")
    sys.exit(0)
