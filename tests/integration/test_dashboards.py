"""Every metric the chart's dashboard and alert rules read is one the project serves.

A real worker (its own process, WORKER_METRICS_PORT) and the API (create_app's
test client, the same /metrics a pod serves) run tasks that succeed, retry,
fail and get revoked, so that every labelled counter has a sample; then the
metric names and labels that the dashboard queries and the PrometheusRule
expressions use (read from their PromQL syntax trees, testing/promql.py) are
compared with what both scrapes contain.
"""

from __future__ import annotations

import json

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from dev.manifests import ALL_OPTIONS, by_kind_name, render
from testing import promql
from testing.processes import Worker
from testing.servers import free_port, wait_until
from workqueue.settings import Settings

pytestmark = pytest.mark.integration

# Labels Prometheus adds to every scraped series (the ServiceMonitor's targets).
TARGET_LABELS = {"namespace", "job", "instance", "pod", "service", "endpoint", "container"}


def served(*texts: str) -> dict[str, set[str]]:
    """{sample name: its label names} of Prometheus text-format scrapes."""
    found: dict[str, set[str]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, set()).update(sample.labels)
    return found


def shipped_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard query and every alert expression of the chart."""
    objects = by_kind_name(render(ALL_OPTIONS))
    board = json.loads(objects[("ConfigMap", "workqueue-dashboards")]["data"]["workqueue.json"])
    alerts = [
        (f"alert {name}", expr) for name, expr in promql.rule_expressions(objects[("PrometheusRule", "workqueue")])
    ]
    return [*promql.dashboard_queries(board), *alerts]


def test_dashboard_and_alerts_read_only_metrics_that_are_served(own_vhost, backend_url, tmp_path):
    port = free_port()
    worker = Worker(own_vhost.url, backend_url, name="dashboarded", WORKER_METRICS_PORT=str(port))
    settings = Settings(broker_url=own_vhost.url, result_backend=backend_url, runtime_dir=str(tmp_path), api_auth="off")
    app = create_app(settings, TESTING=True)
    http = app.test_client()
    try:
        worker.start().wait_ready()
        ids = [http.post("/tasks", json={"task": "add", "args": [i, 1]}).get_json()["id"] for i in range(3)]
        ids.append(http.post("/tasks", json={"task": "flaky", "args": [10]}).get_json()["id"])  # retries, then fails
        revoked = http.post("/tasks", json={"task": "sleep", "args": [30]}).get_json()["id"]
        wait_until(lambda: http.get(f"/tasks/{revoked}").get_json()["state"] == "PROGRESS", 30, "the sleep to run")
        http.delete(f"/tasks/{revoked}")
        for task_id in [*ids, revoked]:
            assert http.get(f"/tasks/{task_id}?wait=30").get_json()["state"] in ("SUCCESS", "FAILURE", "REVOKED")
        assert http.post("/tasks", json={"task": "no-such-task"}).status_code == 422  # a 4xx for the errors panel
        worker_text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        api_text = http.get("/metrics").get_data(as_text=True)
    finally:
        worker.stop()
        app.extensions["workqueue"].close()
    samples = served(worker_text, api_text)
    queries = shipped_queries()
    assert len(queries) > 20
    used: set[str] = set()
    for where, query in queries:
        names = promql.metric_names(query)
        assert names, f"{where} reads no metric: {query}"
        used |= names
        missing = sorted(n for n in names if n not in samples)
        assert not missing, f"{where} reads {missing}, which neither the API nor a worker serves"
        for metric, label in sorted(promql.label_uses(query)):
            if label not in TARGET_LABELS:
                assert label in samples[metric], f"{where}: {metric} has no label {label!r}"
    # The metrics the issue asks the dashboard and alerts to cover are all among them.
    assert {
        "celery_task_sent_total",
        "celery_task_failed_total",
        "celery_task_retried_total",
        "celery_task_revoked_total",
        "celery_task_runtime_bucket",
        "workqueue_task_queue_wait_seconds_bucket",
        "celery_queue_length",
        "celery_active_consumer_count",
        "celery_worker_up",
        "celery_worker_tasks_active",
        "workqueue_api_request_duration_seconds_bucket",
    } <= used
