"""deploy/: the chart's default objects as plain manifests, and they really run.

The last part runs the manifests' own container arguments, environment and
probe commands locally, through run.sh and celery_status.sh as the image
does, against a private RabbitMQ (with the ConfigMap's user and a password
as the Secret would give it) and a private Redis with a password.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis
import requests

from dev import manifests as kube
from dev.manifests import DEPLOY, KUBE_VERSIONS, REPO, containers, load_all, pod_spec, render
from testing.servers import (
    Process,
    RabbitMQ,
    Redis,
    command_lines,
    free_port,
    started,
    wait_until,
)
from tests.k8s import policy
from tests.k8s.local import Cluster, deploy_objects, for_deploy, wait_for_probe

README = DEPLOY / "README.md"


# --- deploy/ is the chart ----------------------------------------------------------


def test_deploy_is_the_default_chart_render() -> None:
    expected, actual = kube.expected_deploy(), kube.deploy_files()
    assert sorted(actual) == sorted(expected), "deploy/ files differ from the chart; run `python -m dev.manifests`"
    stale = [str(path) for path in expected if actual[path] != expected[path]]
    assert stale == [], f"out of date with the chart (run `python -m dev.manifests`): {stale}"


def _summary(obj: dict[str, Any]) -> dict[str, Any]:
    """What the parity promise is about: kind, name, commands, env keys, probes, ports."""
    summary: dict[str, Any] = {"labels": obj["metadata"].get("labels")}
    if obj["kind"] in {"Deployment", "StatefulSet", "Job", "Pod"}:
        for c in containers(obj):
            env_keys = sorted(e["name"] for e in c.get("env", []))
            env_from = [ref for source in c.get("envFrom", []) for ref in source.values()]
            probes = {kind: c.get(f"{kind}Probe") for kind in ("startup", "liveness", "readiness")}
            summary[c["name"]] = (c.get("command"), c.get("args"), env_keys, env_from, probes, c.get("ports"))
    if obj["kind"] == "Service":
        summary["ports"] = obj["spec"]["ports"]
    if obj["kind"] == "ConfigMap":
        summary["data"] = obj["data"]
    return summary


def test_chart_and_deploy_have_the_same_objects_commands_env_probes_and_ports() -> None:
    chart = {(doc.kind, doc.name): _summary(doc.obj) for doc in render() if not doc.is_hook and doc.kind != "Secret"}
    for summary in chart.values():
        summary["labels"] = {
            k: v for k, v in summary["labels"].items() if k not in {"helm.sh/chart", "app.kubernetes.io/managed-by"}
        }
    deployed = {key: _summary(obj) for key, obj in deploy_objects().items()}
    assert sorted(deployed) == sorted(chart)
    for key in chart:
        assert deployed[key] == chart[key], key


def test_one_resource_per_file_named_component_kind() -> None:
    for path, text in kube.deploy_files().items():
        objects = [obj for _, obj in load_all({path: text})]
        assert len(objects) == 1, path
        (obj,) = objects
        component = obj["metadata"]["labels"].get("app.kubernetes.io/component", "workqueue")
        assert path.name.startswith(f"{component}-") and path.name.endswith(f"-{obj['kind'].lower()}.yaml"), path
        assert "namespace" not in obj["metadata"], f"{path}: the namespace is chosen with kubectl -n"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_file_validates_strictly(kube_version: str) -> None:
    for path, obj in load_all(kube.deploy_files()):
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"deploy/{path} is invalid for Kubernetes {kube_version}: {exc.message} at {list(exc.path)}")


def test_no_password_and_no_secret_in_deploy() -> None:
    for path, obj in load_all(kube.deploy_files()):
        assert obj["kind"] != "Secret", path
    text = "".join(kube.deploy_files().values())
    assert not re.search(r":\s*\"?guest\"?\s*$", text, re.MULTILINE) and "PASSWORD:" not in text


def test_readme_names_the_pinned_images_deploy_uses() -> None:
    images = {
        c["image"]
        for _, obj in load_all(kube.deploy_files())
        if "template" in obj.get("spec", {})
        for c in containers(obj)
    }
    assert {"workqueue:0.2.0", "workqueue-loadtest:0.2.0", "rabbitmq:4.2.9-management", "redis:8.6.3-alpine"} == images
    for image in images:
        assert f"`{image}`" in README.read_text() or f"{image} ." in README.read_text(), image


def test_readme_creates_the_secret_the_chart_would_generate() -> None:
    created = set(re.findall(r"--from-literal=([A-Z_]+)=\"\$\(openssl rand -hex \d+\)\"", README.read_text()))
    (secret,) = [doc for doc in render() if doc.kind == "Secret"]
    assert created == set(secret.obj["data"])
    assert "kubectl create secret generic workqueue-secret" in README.read_text()


def _overrides(text: str) -> dict[str, Any]:
    return json.loads(re.search(r"--overrides='([^']+)'", text)[1])  # type: ignore[index]


@pytest.mark.parametrize("where", ["deploy/README.md", "NOTES.txt"])
def test_temporary_pod_gets_the_workers_settings_and_client_label(where: str) -> None:
    text = README.read_text() if where == "deploy/README.md" else kube.notes()
    assert re.search(r"kubectl (--namespace \S+ )?run testing -it --rm --restart=Never", text)
    assert "--image=workqueue:0.2.0" in text and "-- /bin/sh" in text and "python3 submit_tasks.py" in text
    assert "app.kubernetes.io/component=client" in text and "--override-type=strategic" in text
    (pod_container,) = _overrides(text)["spec"]["containers"]
    worker = next(c for c in containers(deploy_objects()[("Deployment", "workqueue-worker")]) if c["name"] == "worker")
    assert pod_container["name"] == "testing"  # kubectl run names the container after the pod
    assert pod_container["envFrom"] == worker["envFrom"] and pod_container["env"] == worker["env"]


def test_policy_scan_of_deploy_finds_nothing_unexplained() -> None:
    result = policy.scan(DEPLOY)
    assert result.resources >= len(kube.deploy_files()) and result.passed > 300
    assert result.unexpected() == [], policy.explain(result.unexpected())


# --- the manifests' commands are what the image accepts ----------------------------


def run_sh_modes() -> set[str]:
    """The modes run.sh handles (its case labels)."""
    return set(re.findall(r"^  ([a-z]+)\)$", (REPO / "run.sh").read_text(), re.MULTILINE))


def test_container_args_are_run_sh_modes_and_probes_are_shipped_scripts() -> None:
    modes = run_sh_modes()
    assert {"worker", "api", "wait", "submit"} <= modes
    hooks = [d.obj for values in ({}, kube.ALL_OPTIONS, {"loadtest": {"enabled": True, "mode": "queue"}})
             for d in render(values) if d.is_hook]  # fmt: skip
    docs = [obj for _, obj in load_all(kube.deploy_files())] + hooks
    for obj in docs:
        if obj["kind"] not in {"Deployment", "StatefulSet", "Job", "Pod"}:
            continue
        for c in containers(obj):
            if not c["image"].startswith("workqueue:"):
                continue
            assert "command" not in c, "the image's ENTRYPOINT is run.sh; manifests pass args only"
            # A run.sh mode, or a program of the image that run.sh exec's as given.
            assert c["args"][0] in modes | {"python3"}, (obj["metadata"]["name"], c["args"])
            for kind in ("startup", "liveness", "readiness"):
                probe = c.get(f"{kind}Probe", {})
                if "exec" in probe:
                    script, flag = probe["exec"]["command"]
                    assert (REPO / script).is_file() and os.access(REPO / script, os.X_OK)
                    assert flag in re.findall(r"^  (--[a-z]+)\)", (REPO / script).read_text(), re.MULTILINE)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with started(RabbitMQ()) as rabbitmq, started(Redis()) as redis_server:
        local = for_deploy(rabbitmq, redis_server)
        try:
            yield local
        finally:
            local.stop()


@pytest.fixture(scope="module")
def worker(cluster: Cluster) -> dict[str, Any]:
    """The worker Deployment's init step run to completion, then its container started until its startup probe passes.

    As the kubelet would have it before anything else happens to the pod: a
    test that stopped it at once met a process still importing, which
    SIGTERM's default action ends (-15; four parallel test workers made the boot slow enough).
    """
    (init,) = pod_spec(cluster.objects[("Deployment", "workqueue-worker")])["initContainers"]
    assert init["args"] == ["wait"]
    done = cluster.run(init, "worker", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "broker and result backend are reachable" in done.stdout
    c = cluster.container("Deployment", "workqueue-worker", "worker")
    cluster.start(c, "worker")
    wait_for_probe(
        lambda: cluster.exec_probe(c, "startup", "worker").returncode == 0, c["startupProbe"], "worker startup probe"
    )
    return c


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> dict[str, Any]:
    c = cluster.container("Deployment", "workqueue-api", "api")
    cluster.start(c, "api")
    return c


@pytest.mark.integration
def test_init_step_waits_until_the_broker_answers(cluster: Cluster) -> None:
    """With a wrong broker port the init step keeps waiting (and says why) instead of passing."""
    (init,) = pod_spec(cluster.objects[("Deployment", "workqueue-worker")])["initContainers"]
    saved = cluster.config["RABBITMQ_PORT"]
    cluster.config["RABBITMQ_PORT"] = str(free_port())
    try:
        done = cluster.run(init, "init-fails", timeout=60, args=[*init["args"], "--timeout", "3"])
    finally:
        cluster.config["RABBITMQ_PORT"] = saved
    assert done.returncode == 1 and "waiting for dependencies" in done.stdout


@pytest.mark.integration
def test_worker_probes_pass_on_the_running_worker(cluster: Cluster, worker: dict[str, Any]) -> None:
    for kind in ("startup", "readiness", "liveness"):
        wait_for_probe(
            lambda kind=kind: cluster.exec_probe(worker, kind, "worker").returncode == 0,
            worker[f"{kind}Probe"],
            f"worker {kind} probe",
        )
        started = time.monotonic()
        result = cluster.exec_probe(worker, kind, "worker")
        assert result.returncode == 0 and result.stdout == "", (kind, result.stdout)
        assert time.monotonic() - started < 1.0, f"{kind} probe is not cheap"  # milliseconds; slack for a busy machine


@pytest.mark.integration
def test_api_probes_pass_and_a_task_goes_through_the_worker(
    cluster: Cluster, api: dict[str, Any], worker: dict[str, Any]
) -> None:
    for kind in ("startup", "liveness", "readiness"):
        wait_for_probe(lambda kind=kind: cluster.http_probe(api, kind) == 200, api[f"{kind}Probe"], f"API {kind} probe")
    base = f"http://127.0.0.1:{cluster.api_port}"
    body = {"task": "add", "args": [2, 3]}
    # The API takes the Secret's API_TOKENS: no token, no task.
    refused = requests.post(f"{base}/tasks", json=body, timeout=10)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    auth = {"Authorization": f"Bearer {cluster.secret['API_TOKENS']}"}
    submitted = requests.post(f"{base}/tasks", json=body, headers=auth, timeout=10)
    assert submitted.status_code == 202, submitted.text
    location = f"{base}{submitted.headers['Location']}"

    def done() -> bool:
        return requests.get(location, headers=auth, timeout=5).json()["state"] == "SUCCESS"

    wait_until(done, 60, "the task's result")
    assert requests.get(location, headers=auth, timeout=5).json()["result"] == 5


@pytest.mark.integration
def test_helm_test_pod_args_succeed(cluster: Cluster, worker: dict[str, Any]) -> None:
    (test_pod,) = [d.obj for d in render() if d.is_hook]
    (c,) = containers(test_pod)
    done = cluster.run(c, "helm-test", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted 2, succeeded 2, failed 0" in done.stdout


@pytest.mark.integration
def test_load_test_job_args_succeed_in_queue_mode(cluster: Cluster, worker: dict[str, Any]) -> None:
    values = {"loadtest": {"enabled": True, "mode": "queue", "rate": 40, "count": 20}}
    job = next(d.obj for d in render(values) if d.kind == "Job")
    (init,) = pod_spec(job)["initContainers"]
    done = cluster.run(init, "loadtest-wait", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    (c,) = pod_spec(job)["containers"]
    done = cluster.run(c, "loadtest", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().startswith("submitted 20, succeeded 20, failed 0")  # --quiet: the summary only


@pytest.mark.integration
def test_load_test_job_args_succeed_in_http_mode(
    cluster: Cluster, worker: dict[str, Any], api: dict[str, Any], tmp_path: Path
) -> None:
    values = {"loadtest": {"enabled": True, "users": 3, "spawnRate": 3, "duration": 3}}
    job = next(d.obj for d in render(values) if d.kind == "Job")
    # The init container waits until the API answers /readyz (the API process may still be starting).
    (wait,) = pod_spec(job)["initContainers"]
    waited = cluster.run(wait, "loadtest-wait-api", timeout=120)
    assert waited.returncode == 0 and "answered 200" in waited.stdout, waited.stdout + waited.stderr
    assert cluster.http_probe(api, "readiness") == 200
    (c,) = pod_spec(job)["containers"]
    # The report PVC is mounted at /reports; here a temporary folder stands in for it.
    args = [arg.replace("/reports/", f"{tmp_path}/") for arg in c["args"]]
    done = cluster.run(c, "loadtest-http", timeout=240, args=args)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = tmp_path / "loadtest-http-pod"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["submitted"] > 0 and summary["completed"] == summary["submitted"]
    assert (report / "queue_depth.png").exists() and (report / "locust.html").exists()


@pytest.mark.integration
def test_temporary_pod_runs_submit_tasks_from_its_shell(cluster: Cluster, worker: dict[str, Any]) -> None:
    """`kubectl run ... -- /bin/sh`, then `python3 submit_tasks.py` in the image's working directory."""
    (c,) = _overrides(README.read_text())["spec"]["containers"]
    shell = {**c, "args": ["/bin/sh", "-c", "python3 submit_tasks.py --count 2 --interval 0"]}
    done = cluster.run(shell, "testing", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted 2, succeeded 2" in done.stdout


@pytest.mark.integration
def test_worker_exits_cleanly_within_its_grace_period(cluster: Cluster, worker: dict[str, Any]) -> None:
    grace = pod_spec(cluster.objects[("Deployment", "workqueue-worker")])["terminationGracePeriodSeconds"]
    (process,) = [p for p in cluster.processes if "worker" in p.argv]
    started = time.monotonic()
    assert process.stop(timeout=grace) == 0
    assert time.monotonic() - started < grace


@pytest.mark.integration
def test_redis_runs_with_the_secrets_password_which_is_on_no_command_line(tmp_path: Path) -> None:
    """The StatefulSet's own command, run locally: its mounts are folders here, its port a free one."""
    statefulset = deploy_objects()[("StatefulSet", "workqueue-redis")]
    (c,) = pod_spec(statefulset)["containers"]
    conf = deploy_objects()[("ConfigMap", "workqueue-redis")]["data"]["redis.conf"]
    port = free_port()
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in c["volumeMounts"]}
    for folder in mounts.values():
        folder.mkdir()
    local = conf.replace("port 6379", f"port {port}").replace("bind * -::*", "bind 127.0.0.1")
    (mounts["/etc/redis"] / "redis.conf").write_text(local.replace("dir /data", f"dir {mounts['/data']}"))
    script = " ".join([*c["command"][2:], *c["args"]])
    for path, folder in mounts.items():
        script = script.replace(path, str(folder))
    assert c["command"][:2] == ["sh", "-c"] and "$(REDIS_PASSWORD)" not in script
    # A password as a hand-made existingSecret may hold: quotes, a backslash, spaces, shell syntax.
    password = f"p\"a\\ss w'rd $(x) `y` {secrets.token_hex(8)}"
    env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": password, "REDISCLI_AUTH": password}
    process = Process(["sh", "-c", script], env, tmp_path / "redis.log")
    try:
        wait_until(lambda: _answers(port, password) or not process.alive(), 30, "Redis to answer with the password")
        assert process.alive(), process.log_tail()
        assert redis.Redis(port=port, password=password).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        written = mounts["/run/redis"] / "redis.conf"
        assert oct(written.stat().st_mode & 0o777) == "0o600", "readable by Redis' user alone"
        cmdlines = list(command_lines(process.pid).values())
        assert any("redis-server" in line for line in cmdlines), cmdlines
        assert not any(password in line or secrets_part(password) in line for line in cmdlines), cmdlines
        # The probes authenticate from the environment (REDISCLI_AUTH), as in the pod.
        probe = c["readinessProbe"]["exec"]["command"]
        probed = subprocess.run(
            [part.replace("-p 6379", f"-p {port}") for part in probe], env=env, capture_output=True, timeout=5
        )
        assert probed.returncode == 0, probed
    finally:
        process.stop()


def secrets_part(password: str) -> str:
    """The random tail of the test's password: found even if the quoting changed the rest."""
    return password.rsplit(" ", 1)[1]


def _answers(port: int, password: str) -> bool:
    try:
        return bool(redis.Redis(port=port, password=password, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False
