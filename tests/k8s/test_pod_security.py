"""Every pod of the chart, of deploy/ and of the docs passes PodSecurity "restricted".

A namespace labelled ``pod-security.kubernetes.io/enforce: restricted``
rejects any other pod. ``restricted_violations`` implements the checks of
the Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
policy version "latest" as of Kubernetes 1.30-1.37): the Baseline controls
plus the Restricted ones, over containers, init containers and ephemeral
containers. It is applied to every pod the chart renders (with every
option), every pod of deploy/, the `kubectl run testing` pod of NOTES.txt and
deploy/README.md as kubectl builds it, and the client pod of tests/cluster.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from typing import Any

import pytest

from dev import manifests as kube
from dev.manifests import ALL_OPTIONS, load_all, render
from tests.cluster.test_cluster import client_pod

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "Pod", "DaemonSet", "CronJob"}
# Baseline: capabilities that may be added; Restricted narrows it to NET_BIND_SERVICE.
RESTRICTED_CAPABILITIES = {"NET_BIND_SERVICE"}
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec (with metadata) a workload object creates."""
    if obj["kind"] == "Pod":
        return obj
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return obj["spec"]["template"]


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What keeps ``pod`` (a Pod, or a pod template) out of a restricted namespace."""
    spec = pod["spec"]
    problems: list[str] = []
    pod_context = spec.get("securityContext") or {}
    containers = [
        *spec.get("initContainers", []),
        *spec.get("containers", []),
        *spec.get("ephemeralContainers", []),
    ]

    # --- Baseline --------------------------------------------------------------
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"{field} is true")
    if pod_context.get("windowsOptions", {}).get("hostProcess"):
        problems.append("pod: hostProcess")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            problems.append(f"volume {volume['name']}: hostPath")
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds)} is not allowed")
    for sysctl in pod_context.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']} is not safe")
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            problems.append(f"AppArmor annotation {key}={value}")

    def check_context(where: str, context: dict[str, Any]) -> None:
        if context.get("seLinuxOptions"):
            options = context["seLinuxOptions"]
            if options.get("type", "") not in SELINUX_TYPES or options.get("user") or options.get("role"):
                problems.append(f"{where}: seLinuxOptions {options}")
        apparmor = context.get("appArmorProfile", {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            problems.append(f"{where}: appArmorProfile {apparmor}")
        if context.get("seccompProfile", {}).get("type") == "Unconfined":
            problems.append(f"{where}: seccompProfile Unconfined")
        if context.get("runAsUser") == 0:
            problems.append(f"{where}: runAsUser 0")

    check_context("pod", pod_context)
    for container in containers:
        where = f"container {container['name']}"
        context = container.get("securityContext") or {}
        check_context(where, context)
        if context.get("privileged"):
            problems.append(f"{where}: privileged")
        if context.get("windowsOptions", {}).get("hostProcess"):
            problems.append(f"{where}: hostProcess")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{where}: procMount {context['procMount']}")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{where}: hostPort {port['hostPort']}")
        # --- Restricted ----------------------------------------------------------
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        added = set(capabilities.get("add", [])) - RESTRICTED_CAPABILITIES
        if added:
            problems.append(f"{where}: adds capabilities {sorted(added)}")
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{where}: runAsNonRoot is not true (pod or container)")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile is not RuntimeDefault or Localhost")
    return problems


# --- the docs' temporary pod, as `kubectl run` builds it ------------------------------


def _strategic_merge(base: Any, patch: Any) -> Any:
    """kubectl's --override-type=strategic for pods: lists of named items merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = _strategic_merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in base):
        out = copy.deepcopy(base)
        for item in patch:
            match = next((i for i, old in enumerate(out) if old["name"] == item.get("name")), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = _strategic_merge(out[match], item)
        return out
    return copy.deepcopy(patch)


def kubectl_run_pod(text: str) -> dict[str, Any]:
    """The Pod of the `kubectl ... run NAME ...` command in ``text`` (continued lines joined)."""
    command = re.search(r"kubectl [^\n]*run \S+ .*?-- /bin/sh", text.replace("\\\n", " "), re.DOTALL)
    assert command, "no `kubectl run ... -- /bin/sh` command found"
    words = shlex.split(command[0])
    name = words[words.index("run") + 1]
    options = {w.split("=", 1)[0]: w.split("=", 1)[1] for w in words if w.startswith("--") and "=" in w}
    labels = dict(pair.split("=", 1) for pair in options["--labels"].split(","))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": name, "image": options["--image"], "args": ["/bin/sh"], "stdin": True, "tty": True}
            ],
        },
    }
    assert options.get("--override-type") == "strategic"
    return _strategic_merge(pod, json.loads(options["--overrides"]))


DOCS = {
    "NOTES.txt": lambda: kube.notes(),
    "deploy/README.md": lambda: (kube.DEPLOY / "README.md").read_text(),
}


# --- the tests ----------------------------------------------------------------------


def test_the_check_finds_what_restricted_refuses() -> None:
    """A pod with no security settings fails; one with the restricted minimum passes."""
    bare = {"spec": {"containers": [{"name": "app", "image": "x"}], "volumes": [{"name": "h", "hostPath": {}}]}}
    problems = restricted_violations(bare)
    for expected in ("allowPrivilegeEscalation", "drop ALL", "runAsNonRoot", "seccompProfile", "hostPath"):
        assert any(expected in problem for problem in problems), (expected, problems)
    minimal = {
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "app",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        }
    }
    assert restricted_violations(minimal) == []


@pytest.mark.parametrize(
    "values",
    [{}, ALL_OPTIONS, {"loadtest": {"enabled": True, "mode": "queue"}}],
    ids=["default", "all-options", "queue-load-test"],
)
def test_every_pod_of_the_chart_is_restricted(values: dict[str, Any]) -> None:
    pods = [doc for doc in render(values) if doc.kind in WORKLOAD_KINDS]
    assert len(pods) >= 5
    for doc in pods:
        assert restricted_violations(pod_template(doc.obj)) == [], f"{doc.kind}/{doc.name}"


def test_every_pod_of_deploy_is_restricted() -> None:
    pods = [(path, obj) for path, obj in load_all(kube.deploy_files()) if obj["kind"] in WORKLOAD_KINDS]
    assert len(pods) >= 5
    for path, obj in pods:
        assert restricted_violations(pod_template(obj)) == [], f"deploy/{path}"


@pytest.mark.parametrize("where", DOCS)
def test_the_temporary_pod_of_the_docs_is_restricted(where: str) -> None:
    pod = kubectl_run_pod(DOCS[where]())
    assert pod["spec"]["containers"][0]["image"] == "workqueue:0.2.0"
    assert restricted_violations(pod) == []


def test_the_readme_sends_users_to_a_restricted_temporary_pod() -> None:
    """docs/kubernetes.md shortens the command and points to where it is written out in full (checked above)."""
    section = (kube.REPO / "docs" / "kubernetes.md").read_text()
    assert "kubectl run testing" in section and "deploy/README.md" in section and "helm install" in section


def test_the_cluster_tests_client_pod_is_restricted() -> None:
    assert restricted_violations(client_pod("testing", "true")) == []
