"""The Grafana dashboard and the Prometheus alert rules the chart ships.

Render tests: the dashboard ConfigMap carries the sidecar's label and the
generated JSON, every panel has a query, every query and alert expression is
valid PromQL (promql-parser: Prometheus' grammar), and the rules carry
expr/for/labels/annotations with the thresholds of values.yaml.  Whether the
metric names exist is tests/integration/test_dashboards.py's job (it scrapes
a real API and worker).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dev import dashboard as dashboard_source
from dev.manifests import ALL_OPTIONS, Doc, by_kind_name, merged, render
from testing import promql


@pytest.fixture(scope="module")
def everything() -> list[Doc]:
    return render(ALL_OPTIONS)


def rule_object(docs: list[Doc]) -> dict[str, Any]:
    return by_kind_name(docs)[("PrometheusRule", "workqueue")]


def rules(docs: list[Doc]) -> dict[str, dict[str, Any]]:
    (group,) = rule_object(docs)["spec"]["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def dashboard_of(docs: list[Doc]) -> dict[str, Any]:
    return json.loads(by_kind_name(docs)[("ConfigMap", "workqueue-dashboards")]["data"]["workqueue.json"])


# --- the promql helper itself ---------------------------------------------------


def test_metric_names_come_from_the_syntax_tree() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{job="x", le!="+Inf"}[5m])))'
        ' / on() group_left count(b) > bool 2 and absent(c == 1) or -{__name__="d"} unless deriv(e[5m:1m])'
        ' + sum(rate(label_replace(f, "dst", "$1", "src", "(.*)")[5m:]))'
    )
    assert promql.metric_names(expr) == {"a_bucket", "b", "c", "d", "e", "f"}
    # Label names, function names, keywords and strings are not metric names.
    assert promql.metric_names('sum by (name) (rate(x_total{name="y_total"}[1m]))') == {"x_total"}


@pytest.mark.parametrize("broken", ["rate(x[5m]", "sum by (a) x", "x{a=1}", "rate(x)", "histogram_quantile(x_bucket)"])
def test_invalid_promql_is_refused(broken: str) -> None:
    with pytest.raises(ValueError):
        promql.parse(broken)


# --- the dashboard --------------------------------------------------------------


def test_the_committed_dashboard_is_the_generated_one() -> None:
    assert dashboard_source.DASHBOARD.read_text() == dashboard_source.text(), "run `python -m dev.dashboard`"


def test_dashboards_are_off_by_default() -> None:
    kinds = {(doc.kind, doc.name) for doc in render()}
    assert ("ConfigMap", "workqueue-dashboards") not in kinds
    assert not any(kind == "PrometheusRule" for kind, _ in kinds)


def test_dashboard_configmap_is_found_by_the_grafana_sidecar(everything: list[Doc]) -> None:
    config = by_kind_name(everything)[("ConfigMap", "workqueue-dashboards")]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["annotations"] == {"grafana_folder": "Workqueue"}
    assert config["data"]["workqueue.json"] == dashboard_source.DASHBOARD.read_text().rstrip("\n")
    custom = render(
        merged(ALL_OPTIONS, {"metrics": {"dashboards": {"label": "dash", "labelValue": "yes", "folder": ""}}})
    )
    metadata = by_kind_name(custom)[("ConfigMap", "workqueue-dashboards")]["metadata"]
    assert metadata["labels"]["dash"] == "yes" and "grafana_dashboard" not in metadata["labels"]
    assert "annotations" not in metadata


def test_every_panel_has_a_valid_query_on_the_datasource_variable(everything: list[Doc]) -> None:
    board = dashboard_of(everything)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "queue_name"} <= set(variables)
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 12
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], f"{panel['title']} has no query"
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}"
            assert 'namespace=~"$namespace"' in target["expr"], f"{panel['title']} ignores the namespace variable"
    for where, query in promql.dashboard_queries(board):
        try:
            promql.parse(query)
        except ValueError as exc:
            pytest.fail(f"{where}: {query}: {exc}")


def test_the_dashboard_covers_the_issue_s_panels(everything: list[Doc]) -> None:
    board = dashboard_of(everything)
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    for state in ("sent", "received", "succeeded", "failed", "retried", "revoked"):
        assert f"celery_task_{state}_total" in exprs
    for metric in (
        "celery_task_runtime_bucket",
        "workqueue_task_queue_wait_seconds_bucket",
        "celery_queue_length",
        "celery_active_consumer_count",
        "celery_worker_up",
        "celery_worker_tasks_active",
        "workqueue_api_requests_total",
        "workqueue_api_request_duration_seconds_bucket",
    ):
        assert metric in exprs, metric
    assert exprs.count("histogram_quantile(0.95") >= 3


# --- the alert rules --------------------------------------------------------------


def test_rules_render_with_expr_for_labels_and_annotations(everything: list[Doc]) -> None:
    rule = rule_object(everything)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"  # what prometheus-operator's ruleSelector matches
    found = rules(everything)
    assert set(found) == {
        "WorkqueueWorkersDown",
        "WorkqueueQueueGrowing",
        "WorkqueueTaskFailureRatioHigh",
        "WorkqueueQueueWaitHigh",
        "WorkqueueResultStoreNearlyFull",
    }
    for name, alert in found.items():
        assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        promql.parse(alert["expr"])
        # Each alert reads this release's series only, as the chart's ServiceMonitor labels them.
        assert 'namespace="workqueue", job="workqueue-worker-metrics"' in alert["expr"], name
    assert found["WorkqueueWorkersDown"]["for"] == "5m"
    assert found["WorkqueueWorkersDown"]["expr"].startswith("absent(celery_worker_up{")
    assert "deriv(celery_queue_length" in found["WorkqueueQueueGrowing"]["expr"]
    assert "histogram_quantile(0.95" in found["WorkqueueQueueWaitHigh"]["expr"]
    assert "workqueue_result_store_max_memory_bytes" in found["WorkqueueResultStoreNearlyFull"]["expr"]


def test_the_worker_job_label_is_the_worker_metrics_service(everything: list[Doc]) -> None:
    """prometheus-operator names a ServiceMonitor target's job after its Service."""
    assert ("Service", "workqueue-worker-metrics") in by_kind_name(everything)


def test_thresholds_and_labels_come_from_values() -> None:
    values = merged(
        ALL_OPTIONS,
        {
            "metrics": {
                "prometheusRule": {
                    "alertLabels": {"team": "payments"},
                    "workersDown": {"enabled": False},
                    "queueGrowing": {"threshold": 50, "window": "30m", "for": "1h", "severity": "critical"},
                    "failureRatio": {"threshold": 0.25, "window": "5m"},
                    "queueWait": {"thresholdSeconds": 12.5},
                }
            }
        },
    )
    docs = render(values, release="billing", namespace="pay")
    (group,) = by_kind_name(docs)[("PrometheusRule", "billing-workqueue")]["spec"]["groups"]
    found = {rule["alert"]: rule for rule in group["rules"]}
    assert "WorkqueueWorkersDown" not in found
    growing = found["WorkqueueQueueGrowing"]
    assert ") > 50 and" in growing["expr"] and "[30m]" in growing["expr"]
    assert growing["for"] == "1h" and growing["labels"] == {"severity": "critical", "team": "payments"}
    assert found["WorkqueueTaskFailureRatioHigh"]["expr"].rstrip().endswith("> 0.25")
    assert "[5m]" in found["WorkqueueTaskFailureRatioHigh"]["expr"]
    assert found["WorkqueueQueueWaitHigh"]["expr"].rstrip().endswith("> 12.5")
    for alert in found.values():
        assert 'namespace="pay", job="billing-workqueue-worker-metrics"' in alert["expr"]
        promql.parse(alert["expr"])


@pytest.mark.parametrize(
    "values",
    [
        {"metrics": {"prometheusRule": {"failureRatio": {"threshold": 2}}}},
        {"metrics": {"prometheusRule": {"queueGrowing": {"for": "soon"}}}},
        {"metrics": {"prometheusRule": {"queueWait": {"thresholdSeconds": "1m"}}}},
        {"metrics": {"dashboards": {"label": "not a label"}}},
    ],
)
def test_values_schema_rejects_bad_thresholds(values: dict[str, Any]) -> None:
    import helm_python

    with pytest.raises(helm_python.HelmValuesError):
        render(values)
