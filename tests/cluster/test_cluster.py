"""End to end on a real cluster: install the chart, use it, clean up.

Runs only when KUBECONFIG points at a cluster (no cluster exists on the CI
machines, so there it is skipped, and only it). The image must be pullable by
the cluster: WORKQUEUE_IMAGE (default workqueue:0.2.0; load it first with
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

from dev.manifests import CHART

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a Kubernetes cluster: set KUBECONFIG"),
]

RELEASE = "workqueue"
IMAGE = os.environ.get("WORKQUEUE_IMAGE", "workqueue:0.2.0")
CLIENT_LABELS = {
    "app.kubernetes.io/name": "workqueue",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "client",
}


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    from kubernetes import client, config

    config.load_kube_config()
    name = f"workqueue-e2e-{secrets.token_hex(3)}"
    core = client.CoreV1Api()
    # PodSecurity "restricted" enforced: a pod of the chart that breaks it is refused.
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    try:
        yield name
    finally:
        # Takes the kept Secret and the PVCs with it.
        core.delete_namespace(name)


@pytest.fixture(scope="module")
def release(namespace: str) -> Iterator[Any]:
    """The chart installed and rolled out (helm install --wait)."""
    import helm_python

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


def client_pod(name: str, script: str) -> dict[str, Any]:
    """A pod like the README's temporary pod running ``script`` in /bin/sh (PodSecurity restricted)."""
    secret_env = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": f"{RELEASE}-secret", "key": key}}}
        for key in ("RABBITMQ_PASSWORD", "REDIS_PASSWORD", "API_TOKENS")  # the chart requires a token by default
    ]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": CLIENT_LABELS},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": name, "image": IMAGE, "args": ["/bin/sh", "-c", script],
                "envFrom": [{"configMapRef": {"name": f"{RELEASE}-config"}}], "env": secret_env,
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }  # fmt: skip


def run_client_pod(namespace: str, name: str, script: str, timeout: float = 300) -> tuple[str, str]:
    """``client_pod`` run to completion and deleted; (phase, log)."""
    from kubernetes import client

    core = client.CoreV1Api()
    core.create_namespaced_pod(namespace, client_pod(name, script))
    deadline = time.monotonic() + timeout
    phase = "Pending"
    while time.monotonic() < deadline and phase not in ("Succeeded", "Failed"):
        time.sleep(2)
        phase = core.read_namespaced_pod(name, namespace).status.phase
    log = core.read_namespaced_pod_log(name, namespace)
    core.delete_namespaced_pod(name, namespace)
    return phase, log


def test_every_workload_rolls_out(release: Any, namespace: str) -> None:
    from kubernetes import client

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
    script = api_script(
        'location = "/tasks/" + api("/tasks", {"task": "add", "args": [2, 3]})["id"]\n'
        "for _ in range(120):\n"
        "    body = api(location)\n"
        '    if body["state"] == "SUCCESS": print("result", body["result"]); break\n'
        "    time.sleep(0.5)\n"
    )
    phase, log = run_client_pod(namespace, "http-client", script)
    assert phase == "Succeeded" and "result 5" in log, log


def api_script(body: str) -> str:
    """A python3 -c script for a client pod: ``body`` with ``api(path, data=None)`` -> JSON.

    ``api`` sends the first of the Secret's API_TOKENS, as the chart's install notes do.
    """
    return (
        "python3 -c 'import json, os, time, urllib.request as u\n"
        'headers = {"Content-Type": "application/json",'
        ' "Authorization": "Bearer " + os.environ["API_TOKENS"].split(",")[0]}\n'
        "def api(path, data=None):\n"
        '    request = u.Request("http://workqueue-api:8000" + path,'
        " None if data is None else json.dumps(data).encode(), headers)\n"
        "    return json.load(u.urlopen(request, timeout=30))\n"
        f"{body}'"
    )


def scale_workers(namespace: str, replicas: int) -> None:
    from kubernetes import client

    apps = client.AppsV1Api()
    apps.patch_namespaced_deployment_scale("workqueue-worker", namespace, {"spec": {"replicas": replicas}})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = apps.read_namespaced_deployment("workqueue-worker", namespace).status
        if (status.ready_replicas or 0) == replicas and (status.replicas or 0) == replicas:
            return
        time.sleep(2)
    raise AssertionError(f"workers did not reach {replicas} replicas")


def test_broker_pod_re_created_keeps_the_queued_tasks(release: Any, namespace: str) -> None:
    """Delete the broker's pod with tasks queued: the new pod (same PVC, re-mounted) still has them."""
    from kubernetes import client

    scale_workers(namespace, 0)  # nothing consumes: the tasks stay in the queue
    phase, log = run_client_pod(
        namespace,
        "submit-queued",
        api_script('for n in range(5): print("id", api("/tasks", {"task": "add", "args": [n, n]})["id"])'),
    )
    assert phase == "Succeeded", log
    ids = [line.split()[1] for line in log.splitlines() if line.startswith("id ")]
    assert len(ids) == 5, log

    core = client.CoreV1Api()
    old_uid = core.read_namespaced_pod("workqueue-message-queue-0", namespace).metadata.uid
    core.delete_namespaced_pod("workqueue-message-queue-0", namespace)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            pod = core.read_namespaced_pod("workqueue-message-queue-0", namespace)
            if pod.metadata.uid != old_uid and all(c.ready for c in pod.status.container_statuses or [False]):
                break
        except client.ApiException:
            pass
        time.sleep(3)
    else:
        raise AssertionError("the broker pod did not come back ready")

    scale_workers(namespace, 2)
    wait = "; ".join(f'print(api("/tasks/{task_id}?wait=120")["state"])' for task_id in ids)
    phase, log = run_client_pod(namespace, "results-after-recreation", api_script(wait))
    assert phase == "Succeeded" and log.split() == ["SUCCESS"] * 5, log


def test_upgrade_to_the_next_chart_version(release: Any, namespace: str, tmp_path: Any) -> None:
    """The chart as its next release (version and appVersion bumped) upgrades in place and keeps working."""
    import shutil

    import yaml

    chart = tmp_path / "workqueue"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    major, minor, _ = (int(part) for part in meta["version"].split("."))
    meta["version"] = f"{major}.{minor + 1}.0"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    repository, _, tag = IMAGE.rpartition(":")
    upgraded = release.upgrade(
        str(chart), RELEASE, {"image": {"repository": repository, "tag": tag}, "config": {"workerConcurrency": 3}},
        namespace=namespace, wait="watcher", timeout=900,
    )  # fmt: skip
    assert upgraded["info"]["status"] == "deployed", upgraded
    phase, log = run_client_pod(namespace, "after-upgrade", "python3 submit_tasks.py --count 2 --interval 1")
    assert phase == "Succeeded" and "submitted 2, succeeded 2, failed 0" in log, log


def test_helm_test_passes_and_its_logs_can_be_read(release: Any, namespace: str) -> None:
    from kubernetes import client

    result = release.test(RELEASE, timeout=300, logs=True)
    assert "succeeded 2" in result.get("logs", ""), result
    # Kept after success (before-hook-creation only): `helm test --logs` reads it after it finished.
    pod = client.CoreV1Api().read_namespaced_pod("workqueue-test-submit", namespace)
    assert pod.status.phase == "Succeeded"


def test_a_second_release_uses_the_first_ones_broker_and_redis_as_external(release: Any, namespace: str) -> None:
    """externalRabbitmq and externalRedis: a release without a broker or Redis of its own, on the first one's.

    The first release's Services stand in for a managed RabbitMQ and Redis,
    its Secret for the Secret a team creates for them; the second release
    must roll out and pass ``helm test``.  (NetworkPolicies of the first
    release admit only its own pods, so the second renders none of its own
    and the first's are switched off for the test.)
    """
    from kubernetes import client

    repository, _, tag = IMAGE.rpartition(":")
    release.upgrade(
        str(CHART), RELEASE, {"image": {"repository": repository, "tag": tag}, "networkPolicy": {"enabled": False}},
        namespace=namespace, wait="watcher", timeout=600,
    )  # fmt: skip
    secret = f"{RELEASE}-secret"
    values = {
        "image": {"repository": repository, "tag": tag},
        "networkPolicy": {"enabled": False},
        "externalRabbitmq": {
            "enabled": True, "host": f"{RELEASE}-message-queue", "username": "workqueue", "existingSecret": secret,
        },
        "externalRedis": {"enabled": True, "host": f"{RELEASE}-redis", "existingSecret": secret},
    }  # fmt: skip
    second = "borrower"
    release.install(str(CHART), second, values, namespace=namespace, wait="watcher", timeout=600)
    try:
        apps = client.AppsV1Api()
        names = {s.metadata.name for s in apps.list_namespaced_stateful_set(namespace).items}
        assert not any(name.startswith(second) for name in names), "no broker or Redis of its own"
        result = release.test(second, timeout=300, logs=True)
        assert "succeeded 2" in result.get("logs", ""), result
    finally:
        release.uninstall(second, wait="watcher", timeout=300)
