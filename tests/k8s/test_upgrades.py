"""`helm upgrade` never has to change a field Kubernetes refuses to change.

The API server rejects an update that changes an immutable field (a Job's
pod template, a StatefulSet's volumeClaimTemplates, serviceName or
selector, a Deployment's selector, ...), and the whole `helm upgrade` fails
with it. Each case below renders the chart before and after an ordinary
upgrade (the next chart and app version, or a changed value) and compares
those fields of every object rendered both times; hooks are exempt, since
Helm creates them anew instead of patching them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev import manifests as kube
from dev.manifests import ALL_OPTIONS, Doc, merged

# kind -> dotted paths of the fields an update may not change.
IMMUTABLE: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec.selector",),
    "StatefulSet": ("spec.selector", "spec.serviceName", "spec.volumeClaimTemplates", "spec.podManagementPolicy"),
    "Job": ("spec.selector", "spec.template", "spec.completions", "spec.completionMode"),
    "Service": ("spec.clusterIP",),
    "PersistentVolumeClaim": ("spec.accessModes", "spec.storageClassName", "spec.volumeName", "spec.selector"),
    "RoleBinding": ("roleRef",),
    "Pod": ("spec.containers", "spec.initContainers", "spec.volumes"),
}

CLASSIC_CLUSTER = {"rabbitmq": {"replicas": 3}, "config": {"classicQueuesOnCluster": True}}

# (before, after) values of upgrades users make.
VALUE_CHANGES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "new image tag": ({}, {"image": {"tag": "0.1.1"}}),
    "a setting": ({}, {"config": {"workerConcurrency": 4, "taskMaxDeliveries": 3}}),
    "broker 1 -> 3 nodes": ({}, CLASSIC_CLUSTER),
    "classic -> quorum after the migration": (
        CLASSIC_CLUSTER,
        {"config": {"queueType": "quorum", "classicQueuesOnCluster": False}},
    ),
    "more resources": ({}, {"worker": {"resources": {"limits": {"memory": "2Gi"}}}}),
    "options on": ({}, ALL_OPTIONS),
    "options off": (ALL_OPTIONS, {}),
    "load test changed": (
        {"loadtest": {"enabled": True}},
        {"loadtest": {"enabled": True, "users": 50, "duration": 600}},
    ),
    "load test mode": ({"loadtest": {"enabled": True}}, {"loadtest": {"enabled": True, "mode": "queue"}}),
}


def _at(obj: dict[str, Any], dotted: str) -> Any:
    node: Any = obj
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def immutable_changes(before: list[Doc], after: list[Doc]) -> list[str]:
    """Immutable fields an upgrade from ``before`` to ``after`` would have to change."""
    old = {(d.kind, d.name): d for d in before}
    problems = []
    for doc in after:
        previous = old.get((doc.kind, doc.name))
        if previous is None or doc.is_hook or previous.is_hook:
            continue
        for field in IMMUTABLE.get(doc.kind, ()):
            if _at(previous.obj, field) != _at(doc.obj, field):
                problems.append(f"{doc.kind}/{doc.name}: {field}")
    return problems


@pytest.fixture(scope="module")
def next_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This chart as its next release: minor version and appVersion bumped, like every release."""
    chart = tmp_path_factory.mktemp("next") / "workqueue"
    shutil.copytree(kube.CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    major, minor, _ = (int(part) for part in meta["version"].split("."))
    meta["version"] = f"{major}.{minor + 1}.0"
    meta["appVersion"] = f"{meta['appVersion']}-next"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return chart


@pytest.mark.parametrize("values", [{}, ALL_OPTIONS, {"loadtest": {"enabled": True, "mode": "queue"}}])
def test_upgrading_to_the_next_chart_version_changes_no_immutable_field(
    values: dict[str, Any], next_chart: Path
) -> None:
    before, after = kube.render(values), kube.render(values, chart=next_chart)
    # The bump reaches the objects (labels, image): this compares two different renders.
    assert before != after and any("-next" in doc.text for doc in after)
    assert immutable_changes(before, after) == []


@pytest.mark.parametrize("change", VALUE_CHANGES.values(), ids=VALUE_CHANGES.keys())
def test_ordinary_value_changes_touch_no_immutable_field(
    change: tuple[dict[str, Any], dict[str, Any]], next_chart: Path
) -> None:
    old_values, new_values = change
    before = kube.render(old_values)
    after = kube.render(merged(old_values, new_values) if new_values else {}, chart=next_chart)
    assert immutable_changes(before, after) == []


def test_the_comparison_catches_what_would_fail() -> None:
    """The check can fail: a new PVC size is in the immutable volumeClaimTemplates (the README says how to grow one)."""
    before = kube.render({})
    after = kube.render({"rabbitmq": {"persistence": {"size": "20Gi"}}})
    assert immutable_changes(before, after) == ["StatefulSet/workqueue-message-queue: spec.volumeClaimTemplates"]
