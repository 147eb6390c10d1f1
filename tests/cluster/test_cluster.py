"""End to end on a real cluster: install the chart, use it, clean up.

Runs only when KUBECONFIG points at a cluster (no cluster exists on the CI
machines, so there it is skipped, and only it). The image must be pullable by
the cluster: WORKQUEUE_IMAGE (default workqueue:0.1.0; load it first with
`kind load docker-image` or `minikube image load`, or push it). Each run uses
a fresh namespace and deletes it afterwards.

    KUBECONFIG=~/.kube/config ./dev.sh test tests/cluster -m cluster
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kube import CHART

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a Kubernetes cluster: set KUBECONFIG"),
]

RELEASE = "workqueue"
IMAGE = os.environ.get("WORKQUEUE_IMAGE", "workqueue:0.1.0")
CLIENT_LABELS = {
    "app.kubernetes.io/name": "workqueue",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "client",
}


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    from kubernetes import client, config  # noqa: PLC0415 - only with a cluster

    config.load_kube_config()
    name = f"workqueue-e2e-{secrets.token_hex(3)}"
    core = client.CoreV1Api()
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        # Takes the kept Secret and the PVCs with it.
        core.delete_namespace(name)


@pytest.fixture(scope="module")
def release(namespace: str) -> Iterator[Any]:
    """The chart installed and rolled out (helm install --wait)."""
    import helm_python  # noqa: PLC0415

    repository, _, tag = IMAGE.rpartition(":")
    helm = helm_python.Config(kubeconfig_path=os.environ["KUBECONFIG"], namespace=namespace)
    helm.install(
        str(CHART), RELEASE, {"image": {"repository": repository, "tag": tag}},
        namespace=namespace, wait="watcher", timeout=600,
    )  # fmt: skip
    try:
        yield helm
    finally:
        helm.uninstall(RELEASE, wait="watcher", timeout=300)


def run_client_pod(namespace: str, name: str, script: str, timeout: float = 300) -> tuple[str, str]:
    """A pod like the README's temporary pod running ``script`` in /bin/sh; (phase, log)."""
    from kubernetes import client  # noqa: PLC0415

    core = client.CoreV1Api()
    secret_env = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": f"{RELEASE}-secret", "key": key}}}
        for key in ("RABBITMQ_PASSWORD", "REDIS_PASSWORD")
    ]
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": CLIENT_LABELS},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": name, "image": IMAGE, "args": ["/bin/sh", "-c", script],
                "envFrom": [{"configMapRef": {"name": f"{RELEASE}-config"}}], "env": secret_env,
            }],
        },
    })  # fmt: skip
    deadline = time.monotonic() + timeout
    phase = "Pending"
    while time.monotonic() < deadline and phase not in ("Succeeded", "Failed"):
        time.sleep(2)
        phase = core.read_namespaced_pod(name, namespace).status.phase
    log = core.read_namespaced_pod_log(name, namespace)
    core.delete_namespaced_pod(name, namespace)
    return phase, log


def test_every_workload_rolls_out(release: Any, namespace: str) -> None:
    from kubernetes import client  # noqa: PLC0415

    apps = client.AppsV1Api()
    for deployment in ("workqueue-api", "workqueue-worker"):
        status = apps.read_namespaced_deployment(deployment, namespace).status
        assert status.ready_replicas == status.replicas, deployment
    for statefulset in ("workqueue-message-queue", "workqueue-redis"):
        status = apps.read_namespaced_stateful_set(statefulset, namespace).status
        assert status.ready_replicas == status.replicas, statefulset


def test_temporary_pod_submits_tasks_and_gets_results(release: Any, namespace: str) -> None:
    phase, log = run_client_pod(namespace, "testing", "python3 submit_tasks.py --count 4 --interval 1")
    assert phase == "Succeeded", log
    assert "submitted 4, succeeded 4, failed 0" in log


def test_api_takes_a_task_over_its_service(release: Any, namespace: str) -> None:
    script = (
        "python3 -c 'import json, time, urllib.request as u\n"
        'body = json.dumps({"task": "add", "args": [2, 3]}).encode()\n'
        'r = u.urlopen(u.Request("http://workqueue-api:8000/tasks", body,'
        ' {"Content-Type": "application/json"}))\n'
        'location = r.headers["Location"]\n'
        "for _ in range(120):\n"
        '    body = json.load(u.urlopen("http://workqueue-api:8000" + location))\n'
        '    if body["state"] == "SUCCESS": print("result", body["result"]); break\n'
        "    time.sleep(0.5)\n'"
    )
    phase, log = run_client_pod(namespace, "http-client", script)
    assert phase == "Succeeded" and "result 5" in log, log


def test_helm_test_passes(release: Any) -> None:
    result = release.test(RELEASE, timeout=300, logs=True)
    assert "succeeded 2" in result.get("logs", ""), result
