"""`worker.pools` and `config.taskRoutes`: one worker Deployment per pool, each consuming only its queues.

The default pool is today's worker (deploy/ is unchanged: test_manifests.py
checks it byte for byte). Each extra pool gets its own objects and
non-overlapping selectors; its settings become env that the worker's own
Settings read; the ConfigMap routes tasks alike for the API and every pool;
and the chart refuses a queue consumed twice or routed to no pool. The last
test runs a pool's worker container and a routed task for real.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import helm_python
import pytest
import yaml

from cli.batch import EXIT_OK
from dev import manifests as kube
from dev.manifests import ALL_OPTIONS, Doc, by_kind_name, containers, pod_spec, render
from testing.servers import RabbitMQ, Redis, started
from tests.k8s.jobs import JobCluster, job_pod_labels
from tests.k8s.local import for_deploy, wait_for_probe
from tests.k8s.test_chart import _admitted, _matches, _pod_labels
from tests.k8s.test_upgrades import immutable_changes
from workqueue import catalogue
from workqueue.settings import Settings

POOLS = {
    "slow": {
        "queues": ["slow", "reports"],
        "replicas": 3,
        "concurrency": 1,
        "taskSoftTimeLimit": 1140,
        "taskTimeLimit": 1200,
        "shutdownTimeout": 1210,
        "terminationGracePeriodSeconds": 1240,
        "resources": {"limits": {"memory": "2Gi"}},
        "keda": {"maxReplicaCount": 4},
    },
    "fast": {"queues": ["fast"], "prefetchMultiplier": 8, "keda": {"enabled": False}, "replicas": 1},
}
VALUES = {
    "worker": {"pools": POOLS, "keda": {"enabled": True}, "nodeSelector": {"pool": "workers"}},
    "config": {"taskRoutes": {"pi": "slow", "sleep": "reports", "add": "fast"}},
    "metrics": {"serviceMonitor": {"enabled": True}},
}
WORKER_KINDS = {"Deployment", "PodDisruptionBudget", "NetworkPolicy"}


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return render(VALUES)


def worker_container(docs: list[Doc], name: str) -> dict[str, Any]:
    return next(c for c in containers(by_kind_name(docs)[("Deployment", name)]) if c["name"] == "worker")


def env_values(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"] if "value" in e}


def test_the_default_is_the_single_worker_of_before(docs: list[Doc]) -> None:
    default = by_kind_name(render())
    workers = {key for key in default if key[1].startswith("workqueue-worker")}
    assert workers == {(kind, "workqueue-worker") for kind in WORKER_KINDS}
    assert "WORKER_QUEUES" not in env_values(worker_container(render(), "workqueue-worker"))  # Settings' default
    # With pools, the default pool's Deployment is still the same object, with the same selector.
    assert immutable_changes(render(), docs) == []
    assert (
        by_kind_name(docs)[("Deployment", "workqueue-worker")]["spec"]["selector"]
        == default[("Deployment", "workqueue-worker")]["spec"]["selector"]
    )


def test_each_pool_gets_its_deployment_pdb_policy_and_scaling(docs: list[Doc]) -> None:
    objects = by_kind_name(docs)
    for pool in ("slow", "fast"):
        for kind in WORKER_KINDS | {"Service"}:
            name = f"workqueue-worker-{pool}" + ("-metrics" if kind == "Service" else "")
            assert (kind, name) in objects, (kind, name)
    slow = objects[("ScaledObject", "workqueue-worker-slow")]
    # Each pool scales on its own queues: one trigger per queue.
    assert [t["metadata"]["queueName"] for t in slow["spec"]["triggers"]] == ["slow", "reports"]
    assert slow["spec"]["maxReplicaCount"] == 4 and slow["spec"]["minReplicaCount"] == 1  # own, and worker's
    assert slow["spec"]["scaleTargetRef"] == {"name": "workqueue-worker-slow"}
    assert "replicas" not in objects[("Deployment", "workqueue-worker-slow")]["spec"]  # KEDA's HPA owns it
    (default_trigger,) = objects[("ScaledObject", "workqueue-worker")]["spec"]["triggers"]
    assert default_trigger["metadata"]["queueName"] == "celery"
    # A pool can leave KEDA off while the default pool has it.
    assert ("ScaledObject", "workqueue-worker-fast") not in objects
    assert objects[("Deployment", "workqueue-worker-fast")]["spec"]["replicas"] == 1
    for trigger in slow["spec"]["triggers"]:
        assert ("TriggerAuthentication", trigger["authenticationRef"]["name"]) in objects


def test_pool_settings_become_env_that_the_workers_settings_read(docs: list[Doc]) -> None:
    config = by_kind_name(docs)[("ConfigMap", "workqueue-config")]["data"]
    secrets = {"RABBITMQ_PASSWORD": "p", "REDIS_PASSWORD": "p"}
    slow = Settings.from_env({**config, **secrets, **env_values(worker_container(docs, "workqueue-worker-slow"))})
    assert slow.worker_queues == ("slow", "reports") and slow.worker_concurrency == 1
    assert (slow.task_soft_time_limit, slow.task_time_limit, slow.worker_shutdown_timeout) == (1140, 1200, 1210)
    fast = Settings.from_env({**config, **secrets, **env_values(worker_container(docs, "workqueue-worker-fast"))})
    assert fast.worker_queues == ("fast",) and fast.worker_prefetch_multiplier == 8
    assert fast.worker_concurrency == int(config["WORKER_CONCURRENCY"])  # not set: the ConfigMap's
    default = Settings.from_env({**config, **secrets, **env_values(worker_container(docs, "workqueue-worker"))})
    assert default.worker_queues == ("celery",)
    # The API reads the same ConfigMap: it publishes each task where a pool consumes it.
    tasks = catalogue.for_settings(default)
    assert (tasks["pi"].queue, tasks["sleep"].queue, tasks["add"].queue, tasks["mul"].queue) == (
        "slow", "reports", "fast", "celery",
    )  # fmt: skip
    consumed = {q for s in (slow, fast, default) for q in s.worker_queues}
    assert set(tasks.queues) <= consumed


def test_pool_values_default_to_the_workers(docs: list[Doc]) -> None:
    slow = by_kind_name(docs)[("Deployment", "workqueue-worker-slow")]
    spec = pod_spec(slow)
    c = worker_container(docs, "workqueue-worker-slow")
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}  # memory its own, cpu the worker's
    assert c["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert spec["nodeSelector"] == {"pool": "workers"} and spec["terminationGracePeriodSeconds"] == 1240
    assert c["readinessProbe"] == worker_container(docs, "workqueue-worker")["readinessProbe"]  # probes as today


def test_pool_selectors_never_overlap_and_policies_cover_every_pool(docs: list[Doc]) -> None:
    pods = {d.name: _pod_labels(d.obj) for d in docs if d.kind in {"Deployment", "StatefulSet"}}
    for doc in docs:
        if doc.kind in {"Deployment", "StatefulSet", "PodDisruptionBudget"}:
            selector = doc.obj["spec"]["selector"]
        elif doc.kind == "NetworkPolicy" and doc.name.startswith("workqueue-worker"):
            selector = doc.obj["spec"]["podSelector"]
        elif doc.kind == "Service" and doc.name.startswith("workqueue-worker"):
            selector = {"matchLabels": doc.obj["spec"]["selector"]}
        else:
            continue
        owner = doc.name.removesuffix("-metrics")
        assert [name for name, labels in pods.items() if _matches(selector, labels)] == [owner], doc.name
    objects = by_kind_name(docs)
    pools = {"workqueue-worker", "workqueue-worker-slow", "workqueue-worker-fast"}
    assert pools <= _admitted(objects[("NetworkPolicy", "workqueue-message-queue")], pods, "amqp")
    assert pools <= _admitted(objects[("NetworkPolicy", "workqueue-redis")], pods, "redis")


def test_the_service_monitor_scrapes_every_pool(docs: list[Doc]) -> None:
    objects = by_kind_name(docs)
    (monitor,) = [d.obj for d in docs if d.kind == "ServiceMonitor"]
    scraped = [
        name
        for (kind, name), obj in objects.items()
        if kind == "Service" and _matches(monitor["spec"]["selector"], obj["metadata"]["labels"])
    ]
    assert {"workqueue-worker-metrics", "workqueue-worker-slow-metrics", "workqueue-worker-fast-metrics"} <= set(
        scraped
    )


def test_notes_list_the_pools_and_their_queues() -> None:
    notes = kube.notes(VALUES)
    assert "workqueue-worker: celery" in notes
    assert "workqueue-worker-slow: slow, reports" in notes and "workqueue-worker-fast: fast" in notes
    assert "TASK_ROUTES sends add to fast, pi to slow, sleep to reports, the rest to celery" in notes
    assert "Worker pools" not in kube.notes()


@pytest.mark.parametrize("section", ["Worker pools", "Schedules", "Batch Job"])
def test_the_chart_readme_examples_render(section: str) -> None:
    text = (kube.CHART / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```yaml\n(.*?)```", body, re.S)
    assert render(yaml.safe_load(example))


def test_all_options_include_a_pool_and_routes() -> None:
    """So the PodSecurity, policy-scan, lint, strict-schema and upgrade tests of ALL_OPTIONS cover pools."""
    assert ALL_OPTIONS["worker"]["pools"] and ALL_OPTIONS["config"]["taskRoutes"]


@pytest.mark.parametrize(
    "values, error, message",
    [
        ({"worker": {"pools": {"a": {"queues": []}}}}, helm_python.HelmValuesError, "/worker/pools/a/queues"),
        ({"worker": {"pools": {"a": {}}}}, helm_python.HelmValuesError, "missing property 'queues'"),
        (
            {"worker": {"pools": {"a": {"queues": ["x"], "replica": 2}}}},
            helm_python.HelmValuesError,
            "additional properties 'replica' not allowed",
        ),
        ({"worker": {"pools": {"A_b": {"queues": ["x"]}}}}, helm_python.HelmValuesError, "A_b"),
        ({"worker": {"pools": {"a": {"queues": ["x,y"]}}}}, helm_python.HelmValuesError, "/worker/pools/a/queues/0"),
        (
            {"worker": {"pools": {"a": {"queues": ["q"]}, "b": {"queues": ["q"]}}}},
            helm_python.HelmRenderError,
            'worker.pools.b.queues: queue "q" is already consumed by worker.pools.a',
        ),
        (
            {"worker": {"pools": {"a": {"queues": ["celery"]}}}},
            helm_python.HelmRenderError,
            'worker.pools.a.queues: queue "celery" is already consumed by worker (the default pool)',
        ),
        (
            {"config": {"taskRoutes": {"pi": "slow"}}},
            helm_python.HelmRenderError,
            'config.taskRoutes.pi: queue "slow" is consumed by no worker pool',
        ),
        ({"config": {"taskRoutes": {"nope": "celery"}}}, helm_python.HelmValuesError, "'nope' not allowed"),
        (
            {"worker": {"pools": {"a": {"queues": ["x"], "taskTimeLimit": 700}}}},
            helm_python.HelmRenderError,
            "config.workerShutdownTimeout (610 s) must exceed worker.pools.a.taskTimeLimit (700 s)",
        ),
        (
            {"worker": {"pools": {"a": {"queues": ["x"], "shutdownTimeout": 700}}}},
            helm_python.HelmRenderError,
            "worker.terminationGracePeriodSeconds (640 s) must be at least worker.pools.a.shutdownTimeout (700 s)",
        ),
    ],
)
def test_render_refuses_pool_mistakes_naming_the_value(
    values: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        render(values)


# --- a pool's worker and a routed task, for real --------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[JobCluster]:
    with started(RabbitMQ()) as rabbitmq, started(Redis()) as redis_server:
        local = for_deploy(rabbitmq, redis_server, JobCluster)
        try:
            yield local
        finally:
            local.stop()


@pytest.mark.integration
def test_a_routed_task_is_done_by_the_pool_that_consumes_its_queue(cluster: JobCluster) -> None:
    """Only the slow pool's worker runs (no default worker): pi routed to `slow` finishes, add to `celery` waits."""
    values = {
        "worker": {"pools": {"slow": {"queues": ["slow"], "concurrency": 1}}},
        "config": {"taskRoutes": {"pi": "slow"}},
        "schedules": {
            "pi": {"schedule": "@hourly", "task": "pi", "kwargs": {"digits": 10}, "wait": True, "timeout": 60},
            "add": {"schedule": "@hourly", "task": "add", "args": [1, 2], "wait": True, "timeout": 8},
        },
    }
    docs = render(values)
    objects = by_kind_name(docs)
    cluster.use_config(objects[("ConfigMap", "workqueue-config")]["data"])
    worker = next(c for c in containers(objects[("Deployment", "workqueue-worker-slow")]) if c["name"] == "worker")
    cluster.start(worker, "worker-slow")
    wait_for_probe(
        lambda: cluster.exec_probe(worker, "readiness", "worker-slow").returncode == 0,
        worker["readinessProbe"],
        "the slow pool's readiness probe",
    )
    cluster.pod_labels = job_pod_labels("workqueue-schedule-pi-1", "uid-pi")
    (submit,) = pod_spec(objects[("CronJob", "workqueue-schedule-pi")])["containers"]
    done = cluster.run(submit, "schedule-pi", timeout=120)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert '-> SUCCESS "3.1415926535"' in done.stdout
    # Nothing consumes celery here: add is queued and never done.
    cluster.pod_labels = job_pod_labels("workqueue-schedule-add-1", "uid-add")
    (submit,) = pod_spec(objects[("CronJob", "workqueue-schedule-add")])["containers"]
    waited = cluster.run(submit, "schedule-add", timeout=60)
    assert waited.returncode != EXIT_OK and "0 succeeded, 0 failed, 1 still pending" in waited.stdout


# Each option a pool may set, a value for it, and where it shows in the pool's objects.
POOL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "replicas": (3, lambda o: o["Deployment"]["spec"]["replicas"] == 3),
    "concurrency": (5, lambda o: pool_env(o)["WORKER_CONCURRENCY"] == "5"),
    "prefetchMultiplier": (4, lambda o: pool_env(o)["WORKER_PREFETCH_MULTIPLIER"] == "4"),
    "maxMemoryPerChildKb": (123456, lambda o: pool_env(o)["WORKER_MAX_MEMORY_PER_CHILD_KB"] == "123456"),
    "taskSoftTimeLimit": (100, lambda o: pool_env(o)["TASK_SOFT_TIME_LIMIT"] == "100"),
    "resources": ({"limits": {"memory": "3Gi"}}, lambda o: pool_worker(o)["resources"]["limits"]["memory"] == "3Gi"),
    "pdb": ({"maxUnavailable": 2}, lambda o: o["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 2),
    "keda": ({"enabled": True}, lambda o: "ScaledObject" in o),
    "nodeSelector": ({"pool": "p"}, lambda o: pod(o)["nodeSelector"] == {"pool": "p"}),
    "tolerations": ([{"key": "k", "operator": "Exists"}], lambda o: pod(o)["tolerations"][0]["key"] == "k"),
    "priorityClassName": ("high", lambda o: pod(o)["priorityClassName"] == "high"),
    "podLabels": ({"team": "p"}, lambda o: o["Deployment"]["spec"]["template"]["metadata"]["labels"]["team"] == "p"),
    "podAnnotations": ({"a": "b"}, lambda o: template_annotations(o["Deployment"])["a"] == "b"),
    "extraEnv": ([{"name": "X_POOL", "value": "1"}], lambda o: pool_env(o)["X_POOL"] == "1"),
}


def template_annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["spec"]["template"]["metadata"].get("annotations", {}))


def without_checksums(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without checksum/* annotations (the generated Secret's passwords differ in every render)."""
    copy = yaml.safe_load(yaml.safe_dump(obj))
    if copy["kind"] == "Deployment":
        annotations = copy["spec"]["template"]["metadata"].get("annotations", {})
        for key in [k for k in annotations if k.startswith("checksum/")]:
            del annotations[key]
    return copy


def pod(objects: dict[str, Any]) -> dict[str, Any]:
    return pod_spec(objects["Deployment"])


def pool_worker(objects: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod(objects)["containers"] if c["name"] == "worker")


def pool_env(objects: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pool_worker(objects).get("env", [])}


@pytest.mark.parametrize("option", POOL_OPTIONS)
def test_an_option_set_on_one_pool_applies_to_that_pool_alone(option: str) -> None:
    value, shows = POOL_OPTIONS[option]
    plain = by_kind_name(render({"worker": {"pools": {"p": {"queues": ["p"]}}}}))
    found = by_kind_name(render({"worker": {"pools": {"p": {"queues": ["p"], option: value}}}}))
    pool = {kind: obj for (kind, name), obj in found.items() if name == "workqueue-worker-p"}
    assert shows(pool), f"worker.pools.p.{option} does not reach the pool's objects"
    for key in [("Deployment", "workqueue-worker"), ("PodDisruptionBudget", "workqueue-worker")]:
        same = without_checksums(found[key]) == without_checksums(plain[key])
        assert same, f"worker.pools.p.{option} leaked into the default pool's {key[0]}"
    if option == "keda":  # KEDA on this pool alone: the Secret key and the authentication it reads exist
        assert "RABBITMQ_MANAGEMENT_URL" in found[("Secret", "workqueue-secret")]["data"]
        assert ("TriggerAuthentication", "workqueue-worker") in found
        assert ("ScaledObject", "workqueue-worker") not in found
