"""The Helm chart rendered in-process, and deploy/ derived from it.

``deploy/`` holds the default chart render for a release named
``workqueue``, one object per ``<component>-<kind>.yaml`` file, without
what only Helm needs (the ``helm.sh/chart`` and ``managed-by`` labels, the
``checksum/*`` annotations, the ``helm test`` pod) and without the Secret,
which deploy/README.md has the reader create with random values.  The
objects that are optional in the chart and exist in deploy/ go to
``deploy/optional/``.  Regenerate both after changing the chart::

    .venv/bin/python -m dev.manifests

and ``tests/k8s/test_manifests.py`` fails whenever deploy/ and the chart drift.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "workqueue"
DEPLOY = REPO / "deploy"
OPTIONAL = DEPLOY / "optional"
RELEASE = "workqueue"
NAMESPACE = "workqueue"
# Oldest and newest Kubernetes versions the manifests are validated against.
# libyaml's parser when PyYAML has it: a render is ~1 MB of YAML, and the
# pure-Python parser made parsing most of the chart tests' time.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
KUBE_VERSIONS = ("1.30.0", "1.37.0")
# Kinds of custom resources (KEDA, prometheus-operator): no bundled schema.
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}

# A schedule as deploy/optional/ and ALL_OPTIONS show it.
SAMPLE_SCHEDULES: dict[str, Any] = {
    "nightly-pi": {"schedule": "0 3 * * *", "timeZone": "Etc/UTC", "task": "pi", "kwargs": {"digits": 1000}},
}
SAMPLE_BATCH: dict[str, Any] = {"enabled": True, "task": "add", "args": [2, 3], "count": 10}
# Every optional part of the chart switched on (and a replicated broker).
ALL_OPTIONS: dict[str, Any] = {
    "api": {
        "ingress": {"enabled": True, "className": "nginx", "tlsSecretName": "workqueue-tls"},
        "autoscaling": {"enabled": True},
    },
    "worker": {
        "keda": {"enabled": True},
        # A pool for long tasks: its own queue, one task at a time, longer limits.
        "pools": {
            "slow": {
                "queues": ["slow"],
                "replicas": 1,
                "concurrency": 1,
                "taskSoftTimeLimit": 1140,
                "taskTimeLimit": 1200,
                "shutdownTimeout": 1210,
                "terminationGracePeriodSeconds": 1240,
                "resources": {"limits": {"memory": "2Gi"}},
            }
        },
    },
    "rabbitmq": {"replicas": 3},
    "config": {"queueType": "quorum", "taskRoutes": {"pi": "slow", "sleep": "slow"}},
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "dashboards": {"enabled": True, "folder": "Workqueue"},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
    },
    "flower": {"enabled": True},
    "loadtest": {"enabled": True},
    "schedules": SAMPLE_SCHEDULES,
    "batch": SAMPLE_BATCH,
}
# The optional objects deploy/optional/ carries (apply them on purpose).
OPTIONAL_VALUES: dict[str, Any] = {
    "api": {"ingress": {"enabled": True}, "autoscaling": {"enabled": True}},
    "loadtest": {"enabled": True},
    "schedules": SAMPLE_SCHEDULES,
    "batch": SAMPLE_BATCH,
}
OPTIONAL_KINDS = {"Ingress", "HorizontalPodAutoscaler", "Job", "PersistentVolumeClaim", "CronJob"}

GENERATED_HEADER = (
    "# Generated from charts/workqueue by `python -m dev.manifests` (see deploy/README.md):\n"
    "# change the chart, then regenerate; tests/k8s/test_manifests.py checks they agree.\n"
)
_HELM_ONLY_LINE = re.compile(
    r"^\s*(helm\.sh/chart|helm\.sh/hook[a-z-]*|app\.kubernetes\.io/managed-by|checksum/[a-z]+):"
)


@dataclass(frozen=True)
class Doc:
    """One rendered object: its template, its text and its parsed form."""

    template: str
    text: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.obj["kind"]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def is_hook(self) -> bool:
        return "helm.sh/hook" in (self.obj["metadata"].get("annotations") or {})


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two values dicts (``extra`` wins)."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render(
    values: Mapping[str, Any] | None = None, release: str = RELEASE, namespace: str = NAMESPACE, chart: Path = CHART
) -> list[Doc]:
    """Objects of ``helm template`` of ``chart`` (ours unless told) for ``values`` (NOTES.txt left out)."""
    import helm_python  # a 75 MB native library: loaded on first use

    rendered = helm_python.Chart.load(str(chart)).render(
        dict(values or {}), name=release, namespace=namespace, is_install=True
    )
    docs = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for part in re.split(r"^---\s*$", text, flags=re.MULTILINE):
            obj = yaml.load(part, Loader=YAML_LOADER)
            if obj:
                docs.append(Doc(template.split("/templates/", 1)[1], part.strip("\n") + "\n", obj))
    return docs


def notes(values: Mapping[str, Any] | None = None) -> str:
    import helm_python

    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(dict(values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for template, text in rendered.items() if template.endswith("NOTES.txt"))


def deploy_text(doc: Doc) -> str:
    """The chart's text of an object without what only Helm needs."""
    lines: list[str] = []
    for line in doc.text.splitlines():
        if _HELM_ONLY_LINE.match(line):
            # The comment block just above a Helm-only line explains it: it goes too.
            while lines and lines[-1].strip().startswith("#") and _indent(lines[-1]) == _indent(line):
                lines.pop()
            continue
        lines.append(line)
    kept: list[str] = []
    for index, line in enumerate(lines):
        # An "annotations:" left with nothing under it goes too.
        if line.strip() == "annotations:":
            following = next((n for n in lines[index + 1 :] if n.strip()), "")
            if _indent(following) <= _indent(line):
                continue
        kept.append(line)
    return GENERATED_HEADER + "\n".join(kept) + "\n"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def file_name(obj: Mapping[str, Any]) -> str:
    """``<component>[-qualifier]-<kind>.yaml``; shared objects are ``workqueue-<kind>.yaml``."""
    name = obj["metadata"]["name"]
    labels = obj["metadata"].get("labels") or {}
    stem = name.removeprefix(f"{RELEASE}-") if "app.kubernetes.io/component" in labels else RELEASE
    return f"{stem}-{obj['kind'].lower()}.yaml"


def expected_deploy() -> dict[Path, str]:
    """What deploy/ must contain: {path relative to deploy/: text}."""
    files: dict[Path, str] = {}
    default = [d for d in render() if not d.is_hook and d.kind != "Secret"]
    for doc in default:
        files[Path(file_name(doc.obj))] = deploy_text(doc)
    for doc in render(OPTIONAL_VALUES):
        if doc.kind in OPTIONAL_KINDS:
            files[Path("optional") / file_name(doc.obj)] = deploy_text(doc)
    return files


def deploy_files() -> dict[Path, str]:
    """What deploy/ contains: {path relative to deploy/: text} of every YAML file."""
    return {path.relative_to(DEPLOY): path.read_text() for path in sorted(DEPLOY.rglob("*.yaml"))}


def load_all(texts: Mapping[Any, str]) -> Iterator[tuple[Any, dict[str, Any]]]:
    for key, text in texts.items():
        for obj in yaml.load_all(text, Loader=YAML_LOADER):
            if obj:
                yield key, obj


def containers(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Init and app containers of a workload or pod."""
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of a Pod, of a workload's template or of a CronJob's Job template."""
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def by_kind_name(docs: list[Doc]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d.kind, d.name): d.obj for d in docs}


def write_deploy() -> None:
    """Rewrite deploy/*.yaml and deploy/optional/*.yaml from the chart."""
    expected = expected_deploy()
    for path in DEPLOY.rglob("*.yaml"):
        if path.relative_to(DEPLOY) not in expected:
            path.unlink()
    for relative, text in expected.items():
        target = DEPLOY / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote deploy/{relative}")


if __name__ == "__main__":
    write_deploy()
    sys.exit(0)
