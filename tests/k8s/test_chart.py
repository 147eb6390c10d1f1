"""The Helm chart: lints clean, renders valid objects, and keeps its promises.

Rendered in-process with helm-python-sdk (Helm v4, no helm binary), for the
default values and for a values set that turns every option on; validated
strictly against the oldest and the newest Kubernetes schemas supported.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from cli.submit_tasks import parse_args
from dev import manifests as kube
from dev.manifests import ALL_OPTIONS, KUBE_VERSIONS, Doc, by_kind_name, containers, pod_spec, render
from tests.k8s import policy
from workqueue import catalogue
from workqueue.celery_app import DEFAULT_QUEUE
from workqueue.settings import REDIS_COMMAND_CONNECTIONS, Settings, SettingsError

VALUE_SETS = {"default": {}, "all-options": ALL_OPTIONS}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "Pod"}


@pytest.fixture(scope="module")
def default() -> list[Doc]:
    return render()


@pytest.fixture(scope="module")
def everything() -> list[Doc]:
    return render(ALL_OPTIONS)


def config_of(docs: list[Doc]) -> dict[str, str]:
    return by_kind_name(docs)[("ConfigMap", "workqueue-config")]["data"]


def secret_of(docs: list[Doc]) -> dict[str, str]:
    data = by_kind_name(docs)[("Secret", "workqueue-secret")]["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def container(docs: list[Doc], kind: str, name: str, container_name: str) -> dict[str, Any]:
    return next(c for c in containers(by_kind_name(docs)[(kind, name)]) if c["name"] == container_name)


# --- lint and schemas -------------------------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict_is_clean(values: dict[str, Any], kube_version: str) -> None:
    report = helm_python.lint(kube.CHART, values, strict=True, kube_version=f"v{kube_version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 1 is info ("icon is recommended")
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_object_validates_strictly(values: dict[str, Any], kube_version: str) -> None:
    for doc in render(values):
        if doc.kind in kube.CUSTOM_KINDS:
            continue  # no bundled schema: checked field by field in the KEDA/ServiceMonitor tests
        try:
            kubernetes_validate.validate(doc.obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc.template} is invalid for Kubernetes {kube_version}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"config": {"queueType": "fifo"}}, "/config/queueType"),
        ({"config": {"rabbitmqUsername": "guest"}}, "/config/rabbitmqUsername"),
        ({"config": {"extraEnv": {"RABBITMQ_PASSWORD": "x"}}}, "RABBITMQ_PASSWORD"),
        ({"rabbitmq": {"replicass": 3}}, "replicass"),
        ({"rabbitmq": {"image": {"tag": "latest"}}}, "/rabbitmq/image/tag"),
        # Two nodes lose their quorum with either node.
        ({"rabbitmq": {"replicas": 2}}, "/rabbitmq/replicas"),
        ({"rabbitmq": {"replicas": 4}}, "/rabbitmq/replicas"),
        # Scaling out never changes the queue type behind the user's back.
        ({"rabbitmq": {"replicas": 3}}, "/config/classicQueuesOnCluster"),
        ({"config": {"queueType": ""}}, "/config/queueType"),
        ({"worker": {"replicas": "two"}}, "/worker/replicas"),
        ({"loadtest": {"tasks": ["celery.backend_cleanup"]}}, "/loadtest/tasks"),
    ],
)
def test_values_schema_rejects_mistakes(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        render(values)


def test_every_value_is_documented_in_values_yaml_and_the_schema() -> None:
    """camelCase keys, each with a `## @param` (leaves) or `## @extra` (maps) comment, each in the schema."""
    text = (kube.CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = yaml.safe_load((kube.CHART / "values.schema.json").read_text())

    def walk(node: dict[str, Any], schema_node: dict[str, Any], prefix: str, documented_parent: bool) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            assert re.fullmatch(r"[a-z][a-zA-Z0-9]*", key), f"{dotted} is not camelCase"
            assert key in schema_node["properties"], f"{dotted} is missing from values.schema.json"
            # Keys inside a Kubernetes structure (resources, security contexts) are documented by its own comment.
            tag = "@extra" if isinstance(value, dict) and value else "@param"
            assert documented_parent or f"## {tag} {dotted} " in text, f"{dotted} has no `## {tag} {dotted}` comment"
            child = schema_node["properties"][key]
            if isinstance(value, dict) and child.get("properties"):
                walk(value, child, f"{dotted}.", documented_parent or f"## @skip {dotted}" in text)

    walk(values, schema, "", False)


# --- what is rendered --------------------------------------------------------

DEFAULT_OBJECTS = {
    ("ConfigMap", "workqueue-config"),
    ("Secret", "workqueue-secret"),
    ("Deployment", "workqueue-api"),
    ("Service", "workqueue-api"),
    ("PodDisruptionBudget", "workqueue-api"),
    ("NetworkPolicy", "workqueue-api"),
    ("Deployment", "workqueue-worker"),
    ("PodDisruptionBudget", "workqueue-worker"),
    ("NetworkPolicy", "workqueue-worker"),
    ("StatefulSet", "workqueue-message-queue"),
    ("Service", "workqueue-message-queue"),
    ("Service", "workqueue-message-queue-headless"),
    ("ConfigMap", "workqueue-message-queue"),
    ("PodDisruptionBudget", "workqueue-message-queue"),
    ("NetworkPolicy", "workqueue-message-queue"),
    ("StatefulSet", "workqueue-redis"),
    ("Service", "workqueue-redis"),
    ("ConfigMap", "workqueue-redis"),
    ("NetworkPolicy", "workqueue-redis"),
    ("NetworkPolicy", "workqueue-client"),
    ("Pod", "workqueue-test-submit"),
}
OPTIONAL_OBJECTS = {
    ("Ingress", "workqueue-api"),
    ("HorizontalPodAutoscaler", "workqueue-api"),
    ("ScaledObject", "workqueue-worker"),
    ("TriggerAuthentication", "workqueue-worker"),
    ("Service", "workqueue-worker-metrics"),
    ("ServiceMonitor", "workqueue"),
    ("ConfigMap", "workqueue-dashboards"),
    ("PrometheusRule", "workqueue"),
    ("Deployment", "workqueue-flower"),
    ("Service", "workqueue-flower"),
    ("NetworkPolicy", "workqueue-flower"),
    ("Job", "workqueue-loadtest"),
    ("PersistentVolumeClaim", "workqueue-loadtest-reports"),
}


def test_default_values_render_the_core_objects_only(default: list[Doc]) -> None:
    assert set(by_kind_name(default)) == DEFAULT_OBJECTS


# ALL_OPTIONS' worker pool "slow", schedule "nightly-pi" and batch Job (tests/k8s/test_pools.py, test_schedules.py).
POOL_SCHEDULE_BATCH_OBJECTS = {
    ("Deployment", "workqueue-worker-slow"),
    ("PodDisruptionBudget", "workqueue-worker-slow"),
    ("NetworkPolicy", "workqueue-worker-slow"),
    ("ScaledObject", "workqueue-worker-slow"),
    ("Service", "workqueue-worker-slow-metrics"),
    ("CronJob", "workqueue-schedule-nightly-pi"),
    ("Job", "workqueue-batch"),
}


def test_every_option_adds_its_objects(everything: list[Doc]) -> None:
    assert set(by_kind_name(everything)) == DEFAULT_OBJECTS | OPTIONAL_OBJECTS | POOL_SCHEDULE_BATCH_OBJECTS


def test_one_object_per_template_file(everything: list[Doc]) -> None:
    """One object per template, or one per worker pool (worker/) or per schedule (schedules/)."""
    per_item = {"worker/": 1 + len(ALL_OPTIONS["worker"]["pools"]), "schedules/": len(ALL_OPTIONS["schedules"])}
    counts = Counter(doc.template for doc in everything)
    for template, count in counts.items():
        shared = template == "worker/triggerauthentication.yaml"  # one for every pool
        expected = next((n for prefix, n in per_item.items() if template.startswith(prefix) and not shared), 1)
        assert count == expected, template


def test_object_names_follow_the_release_name() -> None:
    names = {doc.name for doc in render({}, release="prod")}
    assert "prod-workqueue-worker" in names and "prod-workqueue-config" in names
    assert all(name.startswith("prod-workqueue") for name in names)


def test_image_tag_defaults_to_the_app_version(default: list[Doc]) -> None:
    app_version = yaml.safe_load((kube.CHART / "Chart.yaml").read_text())["appVersion"]
    images = {c["image"] for doc in default if doc.kind in WORKLOAD_KINDS for c in containers(doc.obj)}
    assert f"workqueue:{app_version}" in images
    assert all(":" in image and not image.endswith(":latest") for image in images), images
    custom = render({"image": {"repository": "registry.example/wq", "tag": "1.2.3"}})
    assert container(custom, "Deployment", "workqueue-worker", "worker")["image"] == "registry.example/wq:1.2.3"


# --- configuration and secrets ----------------------------------------------


def test_config_map_uses_the_settings_names_of_the_code(default: list[Doc]) -> None:
    """Every key is an environment name that workqueue/settings.py or celery_status.sh reads."""
    sources = (kube.REPO / "workqueue" / "settings.py").read_text() + (kube.REPO / "celery_status.sh").read_text()
    for key in config_of(default):
        assert f'"{key}"' in sources or f"${{{key}:-" in sources, f"{key} is read by nothing"


def test_config_map_builds_a_valid_settings_object(default: list[Doc]) -> None:
    env = {**config_of(default), "RABBITMQ_PASSWORD": "p@ss/word", "REDIS_PASSWORD": "secret"}
    settings = Settings.from_env(env)
    assert settings.broker_url == "amqp://workqueue:p%40ss%2Fword@workqueue-message-queue:5672/%2F"
    assert settings.result_backend == "redis://:secret@workqueue-redis:6379/0"
    assert settings.queue_type == "classic"


def test_no_password_in_any_config_map_and_no_guest_user(everything: list[Doc]) -> None:
    secrets = secret_of(everything)
    for doc in everything:
        if doc.kind == "ConfigMap":
            for value in doc.obj["data"].values():
                assert not any(secret in value for secret in secrets.values()), doc.name
    assert config_of(everything)["RABBITMQ_USERNAME"] != "guest"


def test_secret_is_generated_with_random_passwords(default: list[Doc]) -> None:
    first, second = secret_of(default), secret_of(render())
    assert set(first) == {"RABBITMQ_PASSWORD", "REDIS_PASSWORD", "RABBITMQ_ERLANG_COOKIE", "API_TOKENS"}
    for key in first:
        assert len(first[key]) >= 32 and first[key].isalnum()
        assert first[key] != second[key], f"{key} is not random"
    secret = by_kind_name(default)[("Secret", "workqueue-secret")]
    # Upgrades reuse the Secret found in the cluster (lookup); uninstall keeps it with the PVCs.
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "lookup" in (kube.CHART / "templates" / "secret.yaml").read_text()


def test_existing_secret_replaces_the_generated_one() -> None:
    docs = render({"existingSecret": "my-passwords"})
    assert "Secret" not in {doc.kind for doc in docs}
    references = re.findall(r"(?:secretKeyRef:\s+|secretName: )(?:name: )?(\S+)", "".join(doc.text for doc in docs))
    assert references and set(references) == {"my-passwords"}


def _helm_template(values: dict[str, Any]) -> str:
    """What `helm template` prints (and Argo CD applies): a client-only dry-run install, lookup finds nothing."""
    config = helm_python.Config(storage_driver="memory", kubeconfig_content="apiVersion: v1\nkind: Config\n")
    release = config.install(str(kube.CHART), "workqueue", values, dry_run="client", namespace=kube.NAMESPACE)
    return release["manifest"]


def test_gitops_renders_with_existing_secret_are_stable() -> None:
    """Rendered offline twice, the objects are the same: nothing for Argo CD to re-sync or RabbitMQ to reject."""
    values = {
        "existingSecret": "workqueue-passwords",
        "flower": {"enabled": True},
        "worker": {"keda": {"enabled": True}},
    }
    first, second = _helm_template(values), _helm_template(values)
    assert first == second and "kind: Secret" not in first
    # Without it every offline render brings new passwords: why the README makes it required there.
    assert _helm_template({}) != _helm_template({})


def test_an_upgrade_that_cannot_find_the_generated_secret_stops_instead_of_replacing_the_passwords() -> None:
    chart = helm_python.Chart.load(str(kube.CHART))
    with pytest.raises(helm_python.HelmRenderError, match="set existingSecret"):
        chart.render({}, name="workqueue", namespace=kube.NAMESPACE, is_install=False, is_upgrade=True)
    rendered = chart.render(
        {"existingSecret": "mine"}, name="workqueue", namespace=kube.NAMESPACE, is_install=False, is_upgrade=True
    )
    assert not any("kind: Secret" in text for text in rendered.values())


def test_app_containers_get_only_the_two_passwords_and_only_http_clients_the_api_tokens(
    everything: list[Doc],
) -> None:
    http_clients = {("workqueue-api", "api"), ("workqueue-loadtest", "loadtest")}
    for doc in everything:
        if doc.kind not in WORKLOAD_KINDS:
            continue
        for c in containers(doc.obj):
            if c["name"] == "wait-for-api":  # polls the API's Service: no settings, no passwords
                assert "env" not in c and "envFrom" not in c
                continue
            if c["image"].split(":")[0] in ("workqueue", "workqueue-loadtest"):
                assert c["envFrom"] == [{"configMapRef": {"name": "workqueue-config"}}]
                secret_env = [e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})]
                tokens = ["API_TOKENS"] if (doc.name, c["name"]) in http_clients else []
                tokens += ["API_READ_TOKENS"] if (doc.name, c["name"]) == ("workqueue-api", "api") else []
                assert secret_env == ["RABBITMQ_PASSWORD", "REDIS_PASSWORD", *tokens], (doc.name, c["name"])


def test_api_auth_is_on_by_default_and_off_leaves_no_token_anywhere() -> None:
    notes = kube.notes()
    assert '-H "Authorization: Bearer $TOKEN"' in notes
    assert "jsonpath='{.data.API_TOKENS}'" in notes and "Secret workqueue-secret" in notes
    (token,) = [
        e for e in container(render(), "Deployment", "workqueue-api", "api")["env"] if e["name"] == "API_TOKENS"
    ]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "workqueue-secret", "key": "API_TOKENS"}
    off = {"api": {"auth": {"enabled": False, "readOnlyToken": True}}, "loadtest": {"enabled": True}}
    for doc in render(off):
        assert not re.search(
            r"^\s*(API_(READ_)?TOKENS:|- name: API_(READ_)?TOKENS$|key: API_(READ_)?TOKENS$)", doc.text, re.M
        ), doc.name
    assert "Authorization" not in kube.notes(off) and "open to anyone" in kube.notes(off)
    # Off is said explicitly (API_AUTH=off), on is the default (required).
    assert config_of(render(off))["API_AUTH"] == "off" and config_of(render())["API_AUTH"] == "required"
    # existingSecret: the API reads API_TOKENS from it (the kubelet refuses to start a pod whose key is missing).
    (token,) = [
        e
        for e in container(render({"existingSecret": "mine"}), "Deployment", "workqueue-api", "api")["env"]
        if e["name"] == "API_TOKENS"
    ]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "API_TOKENS"}


def test_the_api_starts_with_the_charts_secret_and_refuses_a_blank_one(default: list[Doc]) -> None:
    """What run.sh api checks at start, with the ConfigMap and the Secret as the kubelet gives them."""
    env = {**config_of(default), "REDIS_PASSWORD": "x", "RABBITMQ_PASSWORD": "y"}
    tokens = secret_of(default)["API_TOKENS"]
    assert Settings.from_env({**env, "API_TOKENS": tokens}).check_api_access().api_tokens == (tokens,)
    # An existingSecret whose key holds nothing usable (an unset shell variable, a stray comma): no start.
    for blank in ("", " ", ",", " , "):
        with pytest.raises(SettingsError, match="^API_AUTH is required"):
            Settings.from_env({**env, "API_TOKENS": blank}).check_api_access()
    off = config_of(render({"api": {"auth": {"enabled": False}}}))
    assert Settings.from_env({**off, "REDIS_PASSWORD": "x"}).check_api_access().api_auth == "off"


def test_a_read_only_token_is_generated_on_request_and_read_from_an_existing_secret() -> None:
    assert "API_READ_TOKENS" not in secret_of(render())
    generated = render({"api": {"auth": {"readOnlyToken": True}}})
    secret = secret_of(generated)
    assert len(secret["API_READ_TOKENS"]) >= 32 and secret["API_READ_TOKENS"] != secret["API_TOKENS"]
    settings = Settings.from_env(
        {**config_of(generated), "API_TOKENS": secret["API_TOKENS"], "API_READ_TOKENS": secret["API_READ_TOKENS"]}
    )
    assert settings.api_read_tokens == (secret["API_READ_TOKENS"],)
    assert "READ_TOKEN=$(kubectl" in kube.notes({"api": {"auth": {"readOnlyToken": True}}})
    # existingSecret: optional, so a Secret without the key still starts the API (full tokens only).
    (read,) = [
        e
        for e in container(render({"existingSecret": "mine"}), "Deployment", "workqueue-api", "api")["env"]
        if e["name"] == "API_READ_TOKENS"
    ]
    assert read["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "API_READ_TOKENS", "optional": True}


def test_redis_gets_its_password_from_a_file_never_from_its_command_line(default: list[Doc]) -> None:
    redis = container(default, "StatefulSet", "workqueue-redis", "redis")
    command = " ".join([*redis.get("command", []), *redis.get("args", [])])
    assert "requirepass" in command and "--requirepass" not in command
    assert "$(REDIS_PASSWORD)" not in command, "the kubelet would expand it into the arguments"
    mounts = {m["mountPath"]: m["name"] for m in redis["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(by_kind_name(default)[("StatefulSet", "workqueue-redis")])["volumes"]}
    assert volumes[mounts["/run/redis"]]["emptyDir"]["medium"] == "Memory"
    # tests/k8s/test_manifests.py runs this very command and reads /proc/<pid>/cmdline.


# --- timing and sizing that must agree ---------------------------------------


def test_time_limits_fit_inside_each_other(default: list[Doc]) -> None:
    config = config_of(default)
    objects = by_kind_name(default)
    rabbitmq_conf = objects[("ConfigMap", "workqueue-message-queue")]["data"]["rabbitmq.conf"]
    consumer_timeout_s = int(re.search(r"^consumer_timeout = (\d+)$", rabbitmq_conf, re.M)[1]) / 1000
    assert consumer_timeout_s == 1800
    assert int(config["TASK_SOFT_TIME_LIMIT"]) < int(config["TASK_TIME_LIMIT"]) < consumer_timeout_s
    worker_grace = pod_spec(objects[("Deployment", "workqueue-worker")])["terminationGracePeriodSeconds"]
    # A rollout or scale-in lets a task run to its hard limit (no cut, no redelivery
    # counted toward TASK_MAX_DELIVERIES), and the worker exits before the SIGKILL.
    assert int(config["TASK_TIME_LIMIT"]) < float(config["WORKER_SHUTDOWN_TIMEOUT"])
    assert float(config["WORKER_SHUTDOWN_TIMEOUT"]) + 10 <= worker_grace
    assert (config["TASK_TIME_LIMIT"], config["WORKER_SHUTDOWN_TIMEOUT"], worker_grace) == ("600", "610", 640)
    api = objects[("Deployment", "workqueue-api")]
    pre_stop = int(
        container(default, "Deployment", "workqueue-api", "api")["lifecycle"]["preStop"]["exec"]["command"][1]
    )
    graceful = int(
        re.search(r"^graceful_timeout = (\d+)", (kube.REPO / "api" / "gunicorn_conf.py").read_text(), re.M)[1]
    )
    assert pre_stop + graceful < pod_spec(api)["terminationGracePeriodSeconds"] == 30


@pytest.mark.parametrize(
    "values, message",
    [
        ({"config": {"workerShutdownTimeout": 600}}, "must exceed config.taskTimeLimit"),
        ({"config": {"taskTimeLimit": 1200, "taskSoftTimeLimit": 1100}}, "must exceed config.taskTimeLimit"),
        ({"worker": {"terminationGracePeriodSeconds": 615}}, "must be at least config.workerShutdownTimeout"),
    ],
)
def test_shutdown_times_that_would_cut_tasks_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render(values)


def test_longer_tasks_fit_once_their_shutdown_and_grace_grow_with_them() -> None:
    values = {
        "config": {"taskSoftTimeLimit": 1100, "taskTimeLimit": 1200, "workerShutdownTimeout": 1210},
        "worker": {"terminationGracePeriodSeconds": 1240},
    }
    config = config_of(render(values))
    assert (config["TASK_TIME_LIMIT"], config["WORKER_SHUTDOWN_TIMEOUT"]) == ("1200", "1210")


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


def test_worker_pool_fits_its_memory_limit(default: list[Doc]) -> None:
    """max_memory_per_child x concurrency + the main process stays below the container limit."""
    config = config_of(default)
    limit = _bytes(container(default, "Deployment", "workqueue-worker", "worker")["resources"]["limits"]["memory"])
    pool = int(config["WORKER_CONCURRENCY"]) * int(config["WORKER_MAX_MEMORY_PER_CHILD_KB"]) * 1000
    assert pool + 100 * 2**20 < limit


def test_brokers_memory_plan_fits_its_limit(default: list[Doc]) -> None:
    conf = by_kind_name(default)[("ConfigMap", "workqueue-message-queue")]["data"]["rabbitmq.conf"]
    planned = int(re.search(r"^total_memory_available_override_value = (\d+)$", conf, re.M)[1])
    limit = _bytes(
        container(default, "StatefulSet", "workqueue-message-queue", "rabbitmq")["resources"]["limits"]["memory"]
    )
    assert 0.7 * limit < planned < limit


def test_redis_maxmemory_fits_its_limit(default: list[Doc]) -> None:
    conf = by_kind_name(default)[("ConfigMap", "workqueue-redis")]["data"]["redis.conf"]
    maxmemory = int(re.search(r"^maxmemory (\d+)mb$", conf, re.M)[1]) * 2**20
    limit = _bytes(container(default, "StatefulSet", "workqueue-redis", "redis")["resources"]["limits"]["memory"])
    assert maxmemory < limit
    assert "appendonly yes" in conf


# --- probes -------------------------------------------------------------------


def _probe(c: dict[str, Any], kind: str) -> dict[str, Any]:
    return c[f"{kind}Probe"]


def test_worker_probes_are_the_cheap_local_ones_with_documented_timings(default: list[Doc]) -> None:
    worker = container(default, "Deployment", "workqueue-worker", "worker")
    expected = {
        "startup": (["celery_status.sh", "--live"], 2, 3, 30),
        "liveness": (["celery_status.sh", "--live"], 10, 3, 3),
        "readiness": (["celery_status.sh", "--ready"], 5, 3, 2),
    }
    for kind, (command, period, timeout, failures) in expected.items():
        probe = _probe(worker, kind)
        assert probe["exec"]["command"] == command, kind
        assert (probe["periodSeconds"], probe["timeoutSeconds"], probe["failureThreshold"]) == (
            period,
            timeout,
            failures,
        )
    # A hung worker is noticed once the heartbeat is stale; a broker outage never restarts it.
    assert int(config_of(default)["WORKER_HEARTBEAT_MAX_AGE"]) > 5 * float(
        config_of(default)["WORKER_HEARTBEAT_INTERVAL"]
    )


def test_api_probes_use_healthz_and_readyz(default: list[Doc]) -> None:
    api = container(default, "Deployment", "workqueue-api", "api")
    assert _probe(api, "liveness")["httpGet"] == {"path": "/healthz", "port": "http"}
    assert _probe(api, "startup")["httpGet"] == {"path": "/healthz", "port": "http"}
    assert _probe(api, "readiness")["httpGet"] == {"path": "/readyz", "port": "http"}
    assert _probe(api, "readiness")["timeoutSeconds"] >= 3  # /readyz answers within ~2 s


def test_broker_and_redis_probes_are_cheap(default: list[Doc]) -> None:
    rabbitmq = container(default, "StatefulSet", "workqueue-message-queue", "rabbitmq")
    assert _probe(rabbitmq, "liveness")["exec"]["command"] == ["rabbitmq-diagnostics", "-q", "ping"]
    assert _probe(rabbitmq, "liveness")["periodSeconds"] >= 30  # a CLI start-up per call
    assert _probe(rabbitmq, "readiness")["tcpSocket"] == {"port": "amqp"}
    redis = container(default, "StatefulSet", "workqueue-redis", "redis")
    assert "redis-cli" in " ".join(_probe(redis, "liveness")["exec"]["command"])


# --- security -----------------------------------------------------------------


def test_every_container_is_locked_down(everything: list[Doc]) -> None:
    for doc in everything:
        if doc.kind not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(doc.obj)
        assert spec["securityContext"]["runAsNonRoot"] is True, doc.name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, doc.name
        assert spec["enableServiceLinks"] is False, doc.name
        for c in containers(doc.obj):
            context = c["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (doc.name, c["name"])
            assert context["allowPrivilegeEscalation"] is False, (doc.name, c["name"])
            assert context["capabilities"] == {"drop": ["ALL"]}, (doc.name, c["name"])
            assert {"requests", "limits"} <= set(c["resources"]), (doc.name, c["name"])
        assert spec["automountServiceAccountToken"] is False, doc.name


def test_workqueue_pods_run_as_the_images_user_with_a_writable_tmp(everything: list[Doc]) -> None:
    for doc in everything:
        if doc.kind in WORKLOAD_KINDS and any(c["image"].startswith("workqueue:") for c in containers(doc.obj)):
            spec = pod_spec(doc.obj)
            assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["runAsGroup"] == 10001
            assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in spec["volumes"], doc.name
            for c in containers(doc.obj):
                assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], (doc.name, c["name"])


# --- labels, selectors, network policies --------------------------------------


def _pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"]["labels"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]["labels"]


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


def test_selectors_include_the_component_and_never_overlap(everything: list[Doc]) -> None:
    workloads = [doc for doc in everything if doc.kind in {"Deployment", "StatefulSet"}]
    for doc in workloads:
        selector = doc.obj["spec"]["selector"]["matchLabels"]
        assert {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"} == set(selector)
        others = [
            other.name
            for other in workloads
            if other is not doc and _matches({"matchLabels": selector}, _pod_labels(other.obj))
        ]
        assert others == [], f"{doc.name}'s selector also selects {others}"
    for doc in everything:
        labels = doc.obj["metadata"]["labels"]
        assert (
            labels["app.kubernetes.io/part-of"] == "workqueue" and labels["app.kubernetes.io/instance"] == "workqueue"
        )


def test_services_pdbs_and_policies_select_existing_pods(everything: list[Doc]) -> None:
    pods = {doc.name: _pod_labels(doc.obj) for doc in everything if doc.kind in WORKLOAD_KINDS}
    for doc in everything:
        if doc.kind == "Service":
            selector = {"matchLabels": doc.obj["spec"]["selector"]}
        elif doc.kind in {"PodDisruptionBudget"}:
            selector = doc.obj["spec"]["selector"]
        elif doc.kind == "NetworkPolicy":
            selector = doc.obj["spec"]["podSelector"]
        else:
            continue
        assert any(_matches(selector, labels) for labels in pods.values()), f"{doc.kind} {doc.name} selects no pod"


def _admitted(policy_obj: dict[str, Any], pods: dict[str, dict[str, str]], port: str) -> set[str]:
    admitted = set()
    for rule in policy_obj["spec"]["ingress"]:
        if rule.get("ports") and port not in {p["port"] for p in rule["ports"]}:
            continue
        if "from" not in rule:
            return {"*"}
        for peer in rule["from"]:
            if "podSelector" in peer:
                admitted |= {name for name, labels in pods.items() if _matches(peer["podSelector"], labels)}
    return admitted


def test_only_api_workers_and_clients_reach_the_broker_and_redis(default: list[Doc]) -> None:
    objects = by_kind_name(default)
    pods = {doc.name: _pod_labels(doc.obj) for doc in default if doc.kind in WORKLOAD_KINDS}
    pods["kubectl-run-testing"] = {  # the README's temporary pod
        "app.kubernetes.io/name": "workqueue", "app.kubernetes.io/instance": "workqueue",
        "app.kubernetes.io/component": "client",
    }  # fmt: skip
    pods["stranger"] = {"app.kubernetes.io/name": "other", "app.kubernetes.io/instance": "workqueue"}
    clients = {"workqueue-api", "workqueue-worker", "workqueue-test-submit", "kubectl-run-testing"}
    broker = _admitted(objects[("NetworkPolicy", "workqueue-message-queue")], pods, "amqp")
    assert broker == clients | {"workqueue-message-queue"}  # cluster peers reach every port
    assert _admitted(objects[("NetworkPolicy", "workqueue-redis")], pods, "redis") == clients
    assert "workqueue-message-queue" in _admitted(objects[("NetworkPolicy", "workqueue-message-queue")], pods, "dist")
    assert "client" in (kube.REPO / "deploy" / "README.md").read_text()


def test_every_pod_has_a_network_policy(everything: list[Doc]) -> None:
    policies = [doc.obj["spec"]["podSelector"] for doc in everything if doc.kind == "NetworkPolicy"]
    for doc in everything:
        if doc.kind in WORKLOAD_KINDS:
            assert any(_matches(p, _pod_labels(doc.obj)) for p in policies), doc.name


# --- the broker ---------------------------------------------------------------


def test_single_node_broker_is_the_simple_default(default: list[Doc]) -> None:
    objects = by_kind_name(default)
    conf = objects[("ConfigMap", "workqueue-message-queue")]["data"]
    assert "peer_discovery" not in conf["rabbitmq.conf"]
    # The root filesystem is read-only: a log file would stop the node at boot.
    assert "log.file = false" in conf["rabbitmq.conf"].splitlines()
    assert "lifecycle" not in container(default, "StatefulSet", "workqueue-message-queue", "rabbitmq")
    assert conf["enabled_plugins"].strip() == "[rabbitmq_management,rabbitmq_prometheus]."
    statefulset = objects[("StatefulSet", "workqueue-message-queue")]
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    image = container(default, "StatefulSet", "workqueue-message-queue", "rabbitmq")["image"]
    assert re.fullmatch(r"rabbitmq:4\.\d+\.\d+-management", image)


def test_replicated_broker_forms_a_cluster_with_quorum_queues(everything: list[Doc]) -> None:
    objects = by_kind_name(everything)
    assert config_of(everything)["QUEUE_TYPE"] == "quorum"
    conf = objects[("ConfigMap", "workqueue-message-queue")]["data"]
    assert "cluster_formation.peer_discovery_backend = k8s" in conf["rabbitmq.conf"]
    assert "cluster_formation.target_cluster_size_hint = 3" in conf["rabbitmq.conf"]
    assert "rabbitmq_peer_discovery_k8s" in conf["enabled_plugins"]
    # Quorum queues declared while only the first node was up grow to one member per node.
    assert "quorum_queue.continuous_membership_reconciliation.enabled = true" in conf["rabbitmq.conf"]
    assert "quorum_queue.continuous_membership_reconciliation.target_group_size = 3" in conf["rabbitmq.conf"]
    statefulset = objects[("StatefulSet", "workqueue-message-queue")]
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    # RabbitMQ 4.1+ peer discovery derives the seed node from the pod ordinal: no API access, no RBAC.
    assert "serviceAccountName" not in pod_spec(statefulset)
    assert pod_spec(statefulset)["automountServiceAccountToken"] is False
    assert not {kind for kind, _ in objects} & {"ServiceAccount", "Role", "RoleBinding"}
    env = {e["name"]: e for e in container(everything, "StatefulSet", "workqueue-message-queue", "rabbitmq")["env"]}
    assert env["RABBITMQ_NODENAME"]["value"] == (
        "rabbit@$(POD_NAME).workqueue-message-queue-headless.$(POD_NAMESPACE).svc.cluster.local"
    )
    assert objects[("Service", "workqueue-message-queue-headless")]["spec"]["publishNotReadyAddresses"] is True


def test_a_rolling_restart_of_the_cluster_waits_for_quorum_and_drains_each_node(everything: list[Doc]) -> None:
    statefulset = by_kind_name(everything)[("StatefulSet", "workqueue-message-queue")]
    rabbitmq = container(everything, "StatefulSet", "workqueue-message-queue", "rabbitmq")
    shell, flag, script = rabbitmq["lifecycle"]["preStop"]["exec"]["command"]
    steps = re.findall(r"rabbitmq-upgrade (\S+) -t (\d+)", script)
    assert (shell, flag) == ("sh", "-c") and [name for name, _ in steps] == ["await_online_quorum_plus_one", "drain"]
    grace = pod_spec(statefulset)["terminationGracePeriodSeconds"]
    assert sum(int(seconds) for _, seconds in steps) + 60 <= grace


def test_replicas_spread_over_nodes_and_zones_without_ever_blocking_scheduling(everything: list[Doc]) -> None:
    for name in ("workqueue-message-queue", "workqueue-api", "workqueue-worker"):
        kind = "StatefulSet" if name == "workqueue-message-queue" else "Deployment"
        obj = by_kind_name(everything)[(kind, name)]
        constraints = pod_spec(obj)["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        for constraint in constraints:
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway" and constraint["maxSkew"] == 1
            assert constraint["labelSelector"] == obj["spec"]["selector"], name


def test_erlang_cookie_is_an_owner_only_file_off_the_persistent_volume(default: list[Doc]) -> None:
    """The cluster operator's layout: data on the PVC under mnesia/, the cookie in an emptyDir HOME."""
    statefulset = by_kind_name(default)[("StatefulSet", "workqueue-message-queue")]
    spec = pod_spec(statefulset)
    assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    volumes = {v["name"]: v for v in spec["volumes"]}
    rabbitmq = container(default, "StatefulSet", "workqueue-message-queue", "rabbitmq")
    mounts = {m["mountPath"]: m for m in rabbitmq["volumeMounts"]}
    assert mounts["/var/lib/rabbitmq"]["name"] == "home" and "emptyDir" in volumes["home"]
    # The PVC's mnesia/ folder: where the data of releases that mounted the PVC at HOME already is.
    assert mounts["/var/lib/rabbitmq/mnesia"] == {
        "name": "data",
        "mountPath": "/var/lib/rabbitmq/mnesia",
        "subPath": "mnesia",
    }
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]
    (init,) = spec["initContainers"]
    assert init["command"] == [
        "install",
        "-m",
        "0600",
        "/erlang-cookie-secret/.erlang.cookie",
        "/var/lib/rabbitmq/.erlang.cookie",
    ]
    assert volumes["erlang-cookie-secret"]["secret"]["items"] == [
        {"key": "RABBITMQ_ERLANG_COOKIE", "path": ".erlang.cookie"}
    ]
    # Not in the environment any more: nothing but the file holds it.
    assert "RABBITMQ_ERLANG_COOKIE" not in {e["name"] for e in rabbitmq["env"]}


def test_broker_credentials_come_from_the_secret_and_the_config(default: list[Doc]) -> None:
    env = {e["name"]: e for e in container(default, "StatefulSet", "workqueue-message-queue", "rabbitmq")["env"]}
    assert env["RABBITMQ_DEFAULT_USER"]["valueFrom"] == {
        "configMapKeyRef": {"name": "workqueue-config", "key": "RABBITMQ_USERNAME"}
    }
    assert env["RABBITMQ_DEFAULT_VHOST"]["valueFrom"] == {
        "configMapKeyRef": {"name": "workqueue-config", "key": "RABBITMQ_VHOST"}
    }
    assert env["RABBITMQ_DEFAULT_PASS"]["valueFrom"] == {
        "secretKeyRef": {"name": "workqueue-secret", "key": "RABBITMQ_PASSWORD"}
    }
    redis = container(default, "StatefulSet", "workqueue-redis", "redis")
    password = next(e for e in redis["env"] if e["name"] == "REDIS_PASSWORD")
    assert password["valueFrom"] == {"secretKeyRef": {"name": "workqueue-secret", "key": "REDIS_PASSWORD"}}
    # Read by the container's shell into redis.conf (see the test of the Redis command line below).
    assert '"$REDIS_PASSWORD"' in redis["args"][0] and "requirepass" in redis["args"][0]


# --- options --------------------------------------------------------------------


def test_keda_scales_workers_on_queue_length_through_the_management_api(everything: list[Doc]) -> None:
    objects = by_kind_name(everything)
    scaled = objects[("ScaledObject", "workqueue-worker")]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == {"name": "workqueue-worker"}
    assert "replicas" not in objects[("Deployment", "workqueue-worker")]["spec"]  # KEDA's HPA owns it
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["protocol"] == "http"  # counts unacked messages too
    assert trigger["metadata"]["mode"] == "QueueLength" and trigger["metadata"]["queueName"] == DEFAULT_QUEUE
    behaviour = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert behaviour["stabilizationWindowSeconds"] >= 300
    auth = objects[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host" and ref["name"] == "workqueue-secret"
    secret = secret_of(everything)
    assert secret[ref["key"]] == (
        f"http://workqueue:{secret['RABBITMQ_PASSWORD']}@workqueue-message-queue.{kube.NAMESPACE}.svc.cluster.local:15672/"
    )
    policy_obj = objects[("NetworkPolicy", "workqueue-message-queue")]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in [
        peer for rule in policy_obj["spec"]["ingress"] for peer in rule.get("from", [])
    ]


def test_hpa_scales_the_api_on_cpu(everything: list[Doc]) -> None:
    objects = by_kind_name(everything)
    hpa = objects[("HorizontalPodAutoscaler", "workqueue-api")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "workqueue-api"}
    assert "replicas" not in objects[("Deployment", "workqueue-api")]["spec"]


def test_service_monitor_scrapes_api_and_worker_metrics(everything: list[Doc]) -> None:
    objects = by_kind_name(everything)
    monitor = objects[("ServiceMonitor", "workqueue")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
    assert ports == {"http", "metrics"}
    services = [
        doc.obj
        for doc in everything
        if doc.kind == "Service" and _matches(monitor["spec"]["selector"], doc.obj["metadata"]["labels"])
    ]
    assert {p["name"] for s in services for p in s["spec"]["ports"]} == ports
    worker = container(everything, "Deployment", "workqueue-worker", "worker")
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9808, "protocol": "TCP"}]
    assert config_of(everything)["WORKER_METRICS_PORT"] == "9808"


def test_flower_reaches_the_broker_behind_basic_auth(everything: list[Doc]) -> None:
    flower = container(everything, "Deployment", "workqueue-flower", "flower")
    env = {e["name"]: e for e in flower["env"]}
    assert (
        env["CELERY_BROKER_URL"]["value"]
        == "amqp://$(RABBITMQ_USERNAME):$(RABBITMQ_PASSWORD)@workqueue-message-queue:5672/%2F"
    )
    assert env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["key"] == "FLOWER_BASIC_AUTH"
    assert secret_of(everything)["FLOWER_BASIC_AUTH"] == f"admin:{secret_of(everything)['FLOWER_PASSWORD']}"
    assert not flower["image"].endswith(":latest")


def test_workers_send_task_events_when_and_only_when_flower_is_there(default: list[Doc], everything: list[Doc]) -> None:
    """Flower builds its view from task events; without Flower they would cost a publish per task for nothing."""
    assert config_of(everything)["WORKER_SEND_EVENTS"] == "true"
    assert "WORKER_SEND_EVENTS" not in config_of(default)


def test_ingress_routes_to_the_api_service(everything: list[Doc]) -> None:
    ingress = by_kind_name(everything)[("Ingress", "workqueue-api")]
    (rule,) = ingress["spec"]["rules"]
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "workqueue-api", "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "workqueue-tls"


def test_load_test_job_drives_the_api_service_with_locust_and_keeps_the_report(everything: list[Doc]) -> None:
    objects = by_kind_name(everything)
    job = objects[("Job", "workqueue-loadtest")]
    (c,) = pod_spec(job)["containers"]
    assert c["image"] == "workqueue-loadtest:0.2.0"
    assert c["args"][:3] == ["loadtest", "--host", "http://workqueue-api:8000"]
    assert c["args"][-2:] == ["--out", "/reports/$(POD_NAME)"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c["env"]
    claim = pod_spec(job)["volumes"][-1]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in objects
    assert {"name": "reports", "mountPath": "/reports"} in c["volumeMounts"]
    assert job["spec"]["backoffLimit"] == 0 and pod_spec(job)["restartPolicy"] == "Never"
    # Load starts when the API answers /readyz.
    (wait,) = pod_spec(job)["initContainers"]
    assert wait["args"] == ["wait", "--api", "http://workqueue-api:8000", "--timeout", "600"]  # run.sh wait --api


def test_load_test_job_is_a_hook_so_upgrades_never_patch_it(everything: list[Doc]) -> None:
    """A Job's pod template is immutable, and a Job removed by its TTL must not come back on the next upgrade."""
    job = by_kind_name(everything)[("Job", "workqueue-loadtest")]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    # Kept with its logs until the next run replaces it.
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"


def test_load_test_job_in_queue_mode_runs_submit_tasks_with_arguments_it_accepts() -> None:
    docs = render({"loadtest": {"enabled": True, "mode": "queue"}})
    job = by_kind_name(docs)[("Job", "workqueue-loadtest")]
    (c,) = pod_spec(job)["containers"]
    assert c["args"][0] == "submit" and c["image"] == "workqueue:0.2.0"
    args = parse_args(c["args"][1:])
    assert (args.rate, args.count, args.quiet, args.task) == (50, 3000, True, ["add", "mul"])
    assert set(args.task) <= set(catalogue.load())
    assert not any(d.kind == "PersistentVolumeClaim" for d in docs)
    (wait,) = pod_spec(job)["initContainers"]
    assert wait["args"] == ["wait"]


def test_helm_test_pod_submits_tasks_and_waits_for_results(default: list[Doc]) -> None:
    pod = by_kind_name(default)[("Pod", "workqueue-test-submit")]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = containers(pod)
    assert c["args"] == ["submit", "--count", "2", "--timeout", "120"]
    assert parse_args(c["args"][1:]).count == 2
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "client"
    # Not deleted on success: `helm test --logs` reads the pod's log after it finished.
    assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_config_change_rolls_the_app_pods_but_not_the_broker(default: list[Doc]) -> None:
    changed = by_kind_name(render({"config": {"workerConcurrency": 4}}))
    before = by_kind_name(default)

    def checksum(objects: dict[tuple[str, str], dict[str, Any]], kind: str, name: str) -> str:
        return objects[(kind, name)]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    for kind, name in [("Deployment", "workqueue-worker"), ("Deployment", "workqueue-api")]:
        assert checksum(before, kind, name) != checksum(changed, kind, name)
    assert checksum(before, "StatefulSet", "workqueue-message-queue") == checksum(
        changed, "StatefulSet", "workqueue-message-queue"
    )


def test_notes_tell_the_next_commands() -> None:
    text = kube.notes()
    assert "helm test workqueue" in text
    assert "run testing -it --rm --restart=Never" in text and "python3 submit_tasks.py" in text
    assert "app.kubernetes.io/component=client" in text


# --- policy scan ------------------------------------------------------------------


def test_policy_scan_of_the_rendered_chart_finds_nothing_unexplained(everything: list[Doc], tmp_path: Path) -> None:
    for index, doc in enumerate(everything):
        (tmp_path / f"{index:02d}-{kube.file_name(doc.obj)}").write_text(doc.text)
    result = policy.scan(tmp_path)
    assert result.resources >= len(everything) - 1 and result.passed > 500
    assert result.unexpected() == [], policy.explain(result.unexpected())


# --- placement and extension values -------------------------------------------------

KNOBS = {
    "nodeSelector": {"disktype": "ssd"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "queue", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "topologySpreadConstraints": [
        {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
    ],
    "priorityClassName": "queue-critical",
    "podLabels": {"team": "queue"},
    "podAnnotations": {"example.com/owner": "queue"},
    "extraEnv": [{"name": "EXTRA_SETTING", "value": "1"}],
    "extraEnvFrom": [{"secretRef": {"name": "more-settings"}}],
    "extraVolumes": [{"name": "extra", "emptyDir": {}}],
    "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra"}],
}
COMPONENTS = {
    "api": ("Deployment", "workqueue-api", "api"),
    "worker": ("Deployment", "workqueue-worker", "worker"),
    "rabbitmq": ("StatefulSet", "workqueue-message-queue", "rabbitmq"),
    "redis": ("StatefulSet", "workqueue-redis", "redis"),
    "flower": ("Deployment", "workqueue-flower", "flower"),
    # One-off pods: the same knobs, but no default spread (nothing to spread).
    "loadtest": ("Job", "workqueue-loadtest", "loadtest"),
    "tests": ("Pod", "workqueue-test-submit", "submit"),
}


@pytest.mark.parametrize("component", COMPONENTS)
def test_placement_and_extension_values_reach_the_component_pods(component: str) -> None:
    kind, name, container_name = COMPONENTS[component]
    switched_on = {key: {"enabled": True, **(KNOBS if key == component else {})} for key in ("flower", "loadtest")}
    docs = render({component: KNOBS, **switched_on})
    obj = by_kind_name(docs)[(kind, name)]
    spec = pod_spec(obj)
    template = obj["metadata"] if kind == "Pod" else obj["spec"]["template"]["metadata"]
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName"):
        assert spec[key] == KNOBS[key], (component, key)
    assert template["labels"]["team"] == "queue" and template["annotations"]["example.com/owner"] == "queue"
    assert KNOBS["extraVolumes"][0] in spec["volumes"]
    main = next(c for c in spec["containers"] if c["name"] == container_name)
    assert KNOBS["extraEnv"][0] in main["env"] and KNOBS["extraEnvFrom"][0] in main["envFrom"]
    assert KNOBS["extraVolumeMounts"][0] in main["volumeMounts"]
    for doc in docs:  # other components keep their defaults
        if doc.kind in WORKLOAD_KINDS and doc.name != name:
            assert "nodeSelector" not in pod_spec(doc.obj), doc.name


def test_one_off_pods_get_no_default_spread() -> None:
    for kind, name, _ in (COMPONENTS["loadtest"], COMPONENTS["tests"]):
        spec = pod_spec(by_kind_name(render({"loadtest": {"enabled": True}}))[(kind, name)])
        assert not {"topologySpreadConstraints", "nodeSelector", "affinity", "priorityClassName"} & set(spec), name


def test_pod_labels_cannot_take_over_the_selector_labels() -> None:
    with pytest.raises(helm_python.HelmValuesError, match="invalid propertyName"):
        render({"worker": {"podLabels": {"app.kubernetes.io/component": "api"}}})


def test_redis_takes_every_connection_the_defaults_can_open_at_their_largest():
    """Each API process caps its Redis connections (API_MAX_WAITS + 16): the chart's pods fit maxclients."""
    values = yaml.safe_load((kube.CHART / "values.yaml").read_text())
    defaults = Settings.from_env({})
    api = values["api"]["autoscaling"]["maxReplicas"] * defaults.api_workers
    per_api_process = defaults.api_max_waits + REDIS_COMMAND_CONNECTIONS
    # A worker process keeps one pool of its own; two connections each is what one was measured to use.
    workers = values["worker"]["keda"]["maxReplicaCount"] * (defaults.worker_concurrency + 1) * 2
    needed = api * per_api_process + workers
    redis_conf = by_kind_name(render())[("ConfigMap", "workqueue-redis")]["data"]["redis.conf"]
    assert f"maxclients {values['redis']['maxclients']}" in redis_conf
    assert needed < values["redis"]["maxclients"], needed


def test_image_pull_secrets_reach_every_pod() -> None:
    """A private registry (which mirrors the brokers' images too) serves every pod of the chart, hooks included."""
    docs = render({**ALL_OPTIONS, "imagePullSecrets": ["regcred", "mirror"]})
    pods = [d for d in docs if d.kind in {"Deployment", "StatefulSet", "Job", "CronJob", "Pod"}]
    assert {d.name for d in pods} >= {"workqueue-test-submit", "workqueue-loadtest", "workqueue-flower"}
    for doc in pods:
        assert pod_spec(doc.obj).get("imagePullSecrets") == [{"name": "regcred"}, {"name": "mirror"}], doc.name
    assert not any("imagePullSecrets" in pod_spec(d.obj) for d in render() if d.kind in {"Deployment", "Pod"})


def test_the_dashboard_is_served_through_the_ingress_and_the_notes_say_how_to_open_it(
    everything: list[Doc],
) -> None:
    """The API serves /dashboard/: the Ingress routes every path to it, and NOTES.txt gives the way in."""
    ingress = by_kind_name(everything)[("Ingress", "workqueue-api")]
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/" and path["pathType"] == "Prefix"  # /dashboard/ and its event streams included
    text = kube.notes()
    assert "port-forward service/workqueue-api 8000:8000" in text
    assert "http://127.0.0.1:8000/dashboard/" in text and 'echo "$TOKEN"' in text
    with_ingress = kube.notes({"api": {"ingress": {"enabled": True, "host": "wq.example.com", "tlsSecretName": "t"}}})
    assert "https://wq.example.com/dashboard/" in with_ingress
    off = kube.notes({"api": {"auth": {"enabled": False}}})
    assert "/dashboard/" in off and "open to anyone who reaches it" in off and "$TOKEN" not in off
