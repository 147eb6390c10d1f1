"""externalRabbitmq and externalRedis: the chart without its own broker and result store.

Rendered for each combination (and with every option that runs the
workqueue image: schedules, the batch Job, the load test, KEDA, helm test),
then run for real: the rendered containers of a TLS-only external RabbitMQ
and Redis (with a client certificate) run as local processes against
private TLS servers (``tests/k8s/local.py``), init step, worker, probes, API,
a task through, ``helm test``, a schedule's run and the load test.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import requests

from dev.manifests import KUBE_VERSIONS, SAMPLE_BATCH, SAMPLE_SCHEDULES, Doc, by_kind_name, containers, pod_spec, render
from tests.k8s.local import Cluster, wait_for_probe

RABBITMQ = {
    "enabled": True, "host": "rabbitmq.example.com", "port": 5671, "vhost": "workqueue", "username": "wq",
    "existingSecret": "broker-credentials",
    "tls": {"enabled": True, "existingSecret": "broker-tls", "clientCertificate": True},
}  # fmt: skip
REDIS = {
    "enabled": True, "host": "redis.example.com", "port": 6380, "db": 3, "existingSecret": "redis-credentials",
    "tls": {"enabled": True, "existingSecret": "redis-tls"},
}  # fmt: skip
SENTINEL = {
    "enabled": True, "existingSecret": "redis-credentials",
    "sentinel": {"enabled": True, "hosts": "s-0.sentinel:26379,s-1.sentinel:26379", "masterName": "results"},
}  # fmt: skip
# Everything that runs the workqueue image, switched on.
EVERY_WORKLOAD = {
    "worker": {"keda": {"enabled": True}},
    "loadtest": {"enabled": True},
    "schedules": SAMPLE_SCHEDULES,
    "batch": SAMPLE_BATCH,
}
COMBINATIONS = {
    "rabbitmq": {"externalRabbitmq": RABBITMQ},
    "redis": {"externalRedis": REDIS},
    "both": {"externalRabbitmq": RABBITMQ, "externalRedis": REDIS},
    "sentinel": {"externalRedis": SENTINEL},
}


def workqueue_containers(docs: list[Doc]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec, container) of every container of the workqueue images that reads the settings.

    (The load test's wait for the API reads none: it only asks the API's /readyz.)
    """
    for doc in docs:
        if doc.kind in {"Deployment", "StatefulSet", "Job", "CronJob", "Pod"}:
            for c in containers(doc.obj):
                if c["image"].startswith("workqueue") and c.get("envFrom"):
                    yield doc.name, pod_spec(doc.obj), c


def tls_secrets(values: dict[str, Any]) -> dict[str, str]:
    """{service: Secret} of the TLS files a combination mounts (Sentinel takes none here)."""
    found = {}
    for service, key in (("rabbitmq", "externalRabbitmq"), ("redis", "externalRedis")):
        external = values.get(key, {})
        if external.get("tls", {}).get("existingSecret") and not external.get("sentinel"):
            found[service] = external["tls"]["existingSecret"]
    return found


def secret_refs(c: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


@pytest.mark.parametrize("values", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_an_external_service_replaces_the_charts_own_and_every_pod_follows(values: dict[str, Any]) -> None:
    docs = render({**values, **EVERY_WORKLOAD})
    kinds_of = {(d.kind, d.name) for d in docs}
    external_mq, external_redis = "externalRabbitmq" in values, "externalRedis" in values
    for kind in ("StatefulSet", "Service", "NetworkPolicy", "ConfigMap"):
        assert ((kind, "workqueue-message-queue") in kinds_of) is not external_mq, kind
        assert ((kind, "workqueue-redis") in kinds_of) is not external_redis, kind
    assert (("PodDisruptionBudget", "workqueue-message-queue") in kinds_of) is not external_mq
    config = by_kind_name(docs)[("ConfigMap", "workqueue-config")]["data"]
    chart_secret = by_kind_name(docs)[("Secret", "workqueue-secret")]["data"]
    assert ("RABBITMQ_PASSWORD" in chart_secret) is not external_mq, "no password for a broker it does not run"
    assert ("RABBITMQ_ERLANG_COOKIE" in chart_secret) is not external_mq
    assert ("REDIS_PASSWORD" in chart_secret) is not external_redis
    if external_mq:
        address = (config["RABBITMQ_HOST"], config["RABBITMQ_PORT"], config["RABBITMQ_TLS"])
        assert address == ("rabbitmq.example.com", "5671", "true")
        assert config["RABBITMQ_TLS_CERT_FILE"] == "/etc/workqueue/tls/rabbitmq/tls.crt"
        auth = by_kind_name(docs)[("TriggerAuthentication", "workqueue-worker")]["spec"]["secretTargetRef"][0]
        assert (auth["name"], auth["key"]) == ("broker-credentials", "RABBITMQ_MANAGEMENT_URL"), "the user's Secret"
    if "sentinel" in values.get("externalRedis", {}):
        assert config["REDIS_SENTINELS"] == "s-0.sentinel:26379,s-1.sentinel:26379"
        assert config["REDIS_SENTINEL_MASTER"] == "results" and "REDIS_HOST" not in config
    seen = set()
    for workload, spec, c in workqueue_containers(docs):
        seen.add(workload)
        refs = secret_refs(c)
        if external_mq:
            assert refs["RABBITMQ_PASSWORD"] == ("broker-credentials", "RABBITMQ_PASSWORD"), (workload, c["name"])
        if external_redis:
            assert refs["REDIS_PASSWORD"] == ("redis-credentials", "REDIS_PASSWORD"), (workload, c["name"])
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for service, tls_secret in tls_secrets(values).items():
            name = mounts[f"/etc/workqueue/tls/{service}"]
            assert volumes[name]["secret"]["secretName"] == tls_secret, (workload, c["name"])
    assert {"workqueue-api", "workqueue-worker", "workqueue-loadtest", "workqueue-batch"} <= seen, seen
    for kube_version in KUBE_VERSIONS:
        for doc in docs:
            if doc.kind not in {"ScaledObject", "TriggerAuthentication"}:
                kubernetes_validate.validate(doc.obj, kube_version, strict=True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"externalRabbitmq": {"enabled": True}}, "externalRabbitmq"),
        ({"externalRabbitmq": {**RABBITMQ, "existingSecret": ""}}, "externalRabbitmq"),
        ({"externalRedis": {"enabled": True}}, "externalRedis"),
        ({"externalRedis": {"enabled": True, "sentinel": {"enabled": True, "hosts": "no-port"}}}, "externalRedis"),
    ],
)
def test_an_external_service_without_its_address_or_secret_is_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=message):
        render(values)


def test_flower_is_refused_with_an_external_broker() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="flower.enabled is not supported with externalRabbitmq"):
        render({"externalRabbitmq": RABBITMQ, "flower": {"enabled": True}})


# --- the rendered pods, run against a TLS-only RabbitMQ and Redis -------------------


@pytest.fixture(scope="module")
def external(tls_servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    made, node, store = tls_servers
    folders = tmp_path_factory.mktemp("secrets")
    mounts = {}
    for service in ("rabbitmq", "redis"):  # the TLS Secrets' files, as the kubelet mounts them
        folder = folders / service
        folder.mkdir()
        shutil.copy(made.ca, folder / "ca.crt")
        shutil.copy(made.client_cert, folder / "tls.crt")
        shutil.copy(made.client_key, folder / "tls.key")
        mounts[f"/etc/workqueue/tls/{service}"] = folder
    values = {
        "externalRabbitmq": {**RABBITMQ, "host": "localhost", "port": int(node.url.rsplit(":", 1)[1].strip("/")),
                             "vhost": "/", "username": "guest"},
        "externalRedis": {**REDIS, "host": "localhost", "port": store.port, "db": 0,
                          "tls": {**REDIS["tls"], "clientCertificate": True}},
        "loadtest": {"enabled": True, "mode": "queue", "rate": 40, "count": 10},
        "schedules": SAMPLE_SCHEDULES,
    }  # fmt: skip
    docs = render(values)
    objects = {(d.kind, d.name): d.obj for d in docs}
    config = dict(objects[("ConfigMap", "workqueue-config")]["data"])
    token = secrets.token_hex(24)
    local = Cluster(
        objects | {("Pod", "helm-test"): next(d.obj for d in docs if d.is_hook and d.kind == "Pod")},
        config,
        {
            "workqueue-secret": {"API_TOKENS": token},
            "broker-credentials": {"RABBITMQ_PASSWORD": "guest"},
            "redis-credentials": {"REDIS_PASSWORD": ""},
        },
        mounts,
    )
    try:
        yield local
    finally:
        local.stop()


@pytest.mark.integration
def test_the_rendered_pods_run_against_an_external_tls_rabbitmq_and_redis(external: Cluster) -> None:
    (init,) = pod_spec(external.objects[("Deployment", "workqueue-worker")])["initContainers"]
    waited = external.run(init, "worker", timeout=60)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    worker = external.container("Deployment", "workqueue-worker", "worker")
    # The worker's received/succeeded lines, should a task not run (seen once in a full run).
    logging = {"name": "WORKER_LOG_TASKS", "value": "true"}
    external.start({**worker, "env": [*worker.get("env", []), logging]}, "worker")
    for kind in ("startup", "readiness", "liveness"):
        passes = lambda k=kind: external.exec_probe(worker, k, "worker").returncode == 0  # noqa: E731
        wait_for_probe(passes, worker[f"{kind}Probe"], f"worker {kind} probe")
    api = external.container("Deployment", "workqueue-api", "api")
    external.start(api, "api")
    wait_for_probe(lambda: external.http_probe(api, "readiness") == 200, api["readinessProbe"], "API readiness")
    base, auth = f"http://127.0.0.1:{external.api_port}", {"Authorization": f"Bearer {external.secret['API_TOKENS']}"}
    submitted = requests.post(f"{base}/tasks", json={"task": "add", "args": [4, 5]}, headers=auth, timeout=10)
    assert submitted.status_code == 202, submitted.text
    done = requests.get(f"{base}{submitted.headers['Location']}?wait=20", headers=auth, timeout=30).json()
    assert done["state"] == "SUCCESS" and done["result"] == 9, (
        f"{done}\n{external.log('worker')}\n{external.log('api')}"
    )

    (test_pod,) = pod_spec(external.objects[("Pod", "helm-test")])["containers"]
    ran = external.run(test_pod, "helm-test", timeout=180)
    assert ran.returncode == 0 and "submitted 2, succeeded 2, failed 0" in ran.stdout, ran.stdout + ran.stderr
    schedule = next(obj for (kind, _), obj in external.objects.items() if kind == "CronJob")
    (submit,) = pod_spec(schedule)["containers"]
    ran = external.run(submit, "schedule", timeout=120)  # a CronJob's run: submits its task once, no wait
    assert ran.returncode == 0 and "submitted" in ran.stdout, ran.stdout + ran.stderr
    job = external.objects[("Job", "workqueue-loadtest")]
    (load,) = pod_spec(job)["containers"]
    ran = external.run(load, "loadtest", timeout=180)
    assert ran.returncode == 0 and ran.stdout.strip().startswith("submitted 10, succeeded 10, failed 0"), ran.stdout
