"""The broker's pod can be re-created on a volume the kubelet re-owns, and keeps its messages.

A cloud disk mounted for a new pod gets the pod's ``fsGroup`` applied to
every file (group read-write), unless ``fsGroupChangePolicy:
OnRootMismatch`` finds its root already owned. Erlang refuses a cookie file
the group can access ("must be accessible by owner only"), so a cookie kept
on the PVC stops the broker from starting after a re-creation
(sapcc/helm-charts#11388, CloudPirates-io/helm-charts#1141).

These tests run the chart's RabbitMQ pod with podman the way a kubelet runs
it: its init container and container, their commands, environment, user,
groups, read-only root and dropped capabilities, and its volumes (the PVC,
the emptyDirs, the Secret and ConfigMap files with the modes a kubelet
gives them), all taken from the rendered StatefulSet. Between two pods the
PVC is re-owned the way the kubelet does it when it applies ``fsGroup``.
The image is a stand-in built from Debian's rabbitmq-server
(``rabbitmq-standin.Containerfile``): no registry is reachable here.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest

from dev.manifests import by_kind_name, render
from testing.servers import free_port, wait_until
from tests.container.podman import OWNER_LABEL, SCRIPT, Podman

# One pytest-xdist worker runs every container test: one image build, one podman at a time.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group("podman"), pytest.mark.timeout(900)]

CONTAINERFILE = Path(__file__).with_name("rabbitmq-standin.Containerfile")
STANDIN_TAG = "localhost/workqueue-rabbitmq-standin:test"
POD_NAME = "workqueue-message-queue-0"
NAMESPACE = "workqueue"
MESSAGES = 50
COOKIE = "TESTCOOKIEABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789AB"
SECRET = {"RABBITMQ_PASSWORD": "broker-password-1234", "RABBITMQ_ERLANG_COOKIE": COOKIE}


@pytest.fixture(scope="module")
def standin(podman: Podman) -> str:
    """The stand-in image's ID, built on the project's Debian base (layers cached)."""
    base = subprocess.run(
        [str(SCRIPT), "base"], env=podman.env, capture_output=True, text=True, timeout=900, check=False
    )
    assert base.returncode == 0, base.stderr[-3000:]
    iidfile = Path(podman.env.get("TMPDIR", "/tmp")) / f"standin-iid-{os.getpid()}"
    podman.run(
        "build", "--build-arg", f"BASE_IMAGE={base.stdout.split()[-1]}", "--file", str(CONTAINERFILE),
        "--iidfile", str(iidfile), "--tag", STANDIN_TAG, str(CONTAINERFILE.parent), timeout=900,
    )  # fmt: skip
    image = iidfile.read_text().strip().removeprefix("sha256:")
    iidfile.unlink()
    return image


# --- a kubelet, as far as these pods need one -----------------------------------


def kubelet_applies_fs_group(volume: Path, gid: int, policy: str | None) -> bool:
    """What the kubelet does to a volume it mounts for a pod with ``fsGroup``.

    Kubernetes' SetVolumeOwnership: unless the policy is OnRootMismatch and
    the root already has the group (and the setgid bit), every file gets the
    group and ``rw`` for owner and group, every directory also ``x`` and
    setgid. Returns whether it walked the volume.
    """
    root = volume.stat()
    if policy == "OnRootMismatch" and root.st_gid == gid and root.st_mode & stat.S_ISGID:
        return False
    for path in [volume, *volume.rglob("*")]:
        if path.is_symlink():
            continue
        os.chown(path, -1, gid)
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode | 0o2770 if path.is_dir() else mode | 0o660)
    return True


class Pod:
    """One pod of a StatefulSet run with podman; its containers are removed by ``remove``."""

    def __init__(self, podman: Podman, image: str, objects: dict[tuple[str, str], Any], statefulset: dict[str, Any],
                 pvc: Path, workdir: Path) -> None:  # fmt: skip
        self.podman = podman
        self.image = image
        self.objects = objects
        self.spec = statefulset["spec"]["template"]["spec"]
        self.claims = {claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]}
        self.pvc = pvc
        self.workdir = workdir
        self.security = self.spec["securityContext"]
        self.fs_group = self.security["fsGroup"]
        self.port = free_port()
        self.names: list[str] = []
        self.volumes = self._volumes()

    def _volumes(self) -> dict[str, Path]:
        """Each volume of the pod as a host directory, prepared as the kubelet prepares it."""
        paths: dict[str, Path] = {}
        for name in self.claims:
            kubelet_applies_fs_group(self.pvc, self.fs_group, self.security.get("fsGroupChangePolicy"))
            paths[name] = self.pvc
        for volume in self.spec["volumes"]:
            path = self.workdir / volume["name"]
            path.mkdir(parents=True)
            os.chown(path, 0, self.fs_group)
            if "emptyDir" in volume:
                path.chmod(0o2777)
            elif "secret" in volume:
                source = volume["secret"]
                for item in source["items"]:
                    file = path / item["path"]
                    file.write_text(SECRET[item["key"]])
                    os.chown(file, 0, self.fs_group)
                    # The kubelet adds group read to the mode for fsGroup.
                    file.chmod(source.get("defaultMode", 0o644) | 0o040)
                path.chmod(0o755)
            elif "configMap" in volume:
                data = self.objects[("ConfigMap", volume["configMap"]["name"])]["data"]
                for key, text in data.items():
                    (path / key).write_text(text)
                    (path / key).chmod(0o644)
                path.chmod(0o755)
            else:
                raise AssertionError(f"volume type not emulated: {volume}")
            paths[volume["name"]] = path
        return paths

    def _mount(self, mount: dict[str, Any]) -> str:
        source = self.volumes[mount["name"]]
        if "subPath" in mount:
            # The kubelet creates a missing subPath with the volume root's mode.
            sub = source / mount["subPath"]
            if not sub.exists():
                sub.mkdir()
                sub.chmod(stat.S_IMODE(source.stat().st_mode))
            source = sub
        return f"{source}:{mount['mountPath']}:{'ro' if mount.get('readOnly') else 'rw'}"

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for entry in container.get("env", []):
            if "value" in entry:
                # $(VAR) refers to variables defined before it.
                env[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], entry["value"])
                continue
            source = entry["valueFrom"]
            if "fieldRef" in source:
                field = source["fieldRef"]["fieldPath"]
                env[entry["name"]] = {"metadata.name": POD_NAME, "metadata.namespace": NAMESPACE}[field]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[entry["name"]] = self.objects[("ConfigMap", ref["name"])]["data"][ref["key"]]
            else:
                env[entry["name"]] = SECRET[source["secretKeyRef"]["key"]]
        return env

    def _options(self, container: dict[str, Any], role: str) -> list[str]:
        name = f"wqtest-{os.getpid()}-{self.workdir.name}-{role}"
        self.names.append(name)
        context = container["securityContext"]
        user = context.get("runAsUser", self.security["runAsUser"])
        group = context.get("runAsGroup", self.security["runAsGroup"])
        options = [
            "--name", name, "--label", f"{OWNER_LABEL}={os.getpid()}",
            "--user", f"{user}:{group}", "--group-add", str(self.fs_group),
            "--hostname", POD_NAME,
        ]  # fmt: skip
        if context.get("readOnlyRootFilesystem"):
            options += ["--read-only", "--read-only-tmpfs=false"]
        for capability in context.get("capabilities", {}).get("drop", []):
            options += ["--cap-drop", capability.lower()]
        if context.get("allowPrivilegeEscalation") is False:
            options += ["--security-opt", "no-new-privileges"]
        env = self._env(container)
        # A StatefulSet pod's /etc/hosts holds its FQDN (hostname + subdomain).
        host = env.get("RABBITMQ_NODENAME", "@").split("@", 1)[1]
        if host:
            options += ["--add-host", f"{host}:127.0.0.1"]
        for key, value in env.items():
            options += ["--env", f"{key}={value}"]
        for mount in container.get("volumeMounts", []):
            options += ["--volume", self._mount(mount)]
        if "command" in container:
            options += ["--entrypoint", json.dumps(container["command"])]
        return options

    def start(self) -> None:
        """Init containers to completion, in order; then the container, detached."""
        for init in self.spec.get("initContainers", []):
            done = self.podman.run("run", "--rm", *self._options(init, init["name"]), self.image,
                                   *init.get("args", []), check=False, timeout=120)  # fmt: skip
            assert done.returncode == 0, f"init container {init['name']} failed:\n{done.stdout}{done.stderr}"
        (container,) = self.spec["containers"]
        amqp_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "amqp")
        options = self._options(container, container["name"])
        publish = f"127.0.0.1:{self.port}:{amqp_port}"
        self.podman.run("run", "--detach", "--publish", publish, *options, self.image, *container.get("args", []))
        self.container = self.names[-1]

    def running(self) -> bool:
        state = self.podman.run("container", "inspect", "--format", "{{.State.Running}}", self.container)
        return state.stdout.strip() == "true"

    def logs(self) -> str:
        result = self.podman.run("logs", self.container, check=False)
        return result.stdout + result.stderr

    def exec_probe(self, kind: str) -> subprocess.CompletedProcess[str]:
        (container,) = self.spec["containers"]
        command = container[f"{kind}Probe"]["exec"]["command"]
        return self.podman.run("exec", self.container, *command, check=False, timeout=60)

    def stop(self) -> int:
        """preStop (if any), then SIGTERM and SIGKILL after the grace period; the exit code."""
        (container,) = self.spec["containers"]
        pre_stop = container.get("lifecycle", {}).get("preStop")
        if pre_stop:
            self.podman.run("exec", self.container, *pre_stop["exec"]["command"], check=False, timeout=300)
        self.podman.run("stop", "--time", "120", self.container, timeout=240)
        code = self.podman.run("container", "inspect", "--format", "{{.State.ExitCode}}", self.container)
        return int(code.stdout.strip())

    def remove(self) -> None:
        if self.names:
            self.podman.run("rm", "--force", "--ignore", "--time", "0", *self.names, check=False, timeout=120)


def connect(pod: Pod) -> amqp.Connection:
    connection = amqp.Connection(
        f"127.0.0.1:{pod.port}", userid="workqueue", password=SECRET["RABBITMQ_PASSWORD"], connect_timeout=5
    )
    connection.connect()
    return connection


def wait_until_ready(pod: Pod) -> None:
    """Accepts an AMQP login (the readiness port, and more), or fails with the node's log."""

    def ready() -> bool:
        if not pod.running():
            raise AssertionError(f"the broker container exited:\n{pod.logs()[-4000:]}")
        try:
            connect(pod).close()
            return True
        except (OSError, amqp.exceptions.AMQPError):
            return False

    try:
        wait_until(ready, 120, "the broker to accept a login", interval=1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{pod.logs()[-4000:]}") from None


# --- the pods ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> dict[tuple[str, str], Any]:
    return by_kind_name(render())


@pytest.fixture
def pods(podman: Podman, standin: str, chart: dict[tuple[str, str], Any], tmp_path: Path) -> Iterator[Any]:
    """Makes pods of a StatefulSet that share one PVC; removes all of them at the end."""
    pvc = tmp_path / "pvc"
    pvc.mkdir()  # a new disk's root: root:root 0755
    made: list[Pod] = []

    def make(statefulset: dict[str, Any]) -> Pod:
        pod = Pod(podman, standin, chart, statefulset, pvc, tmp_path / f"pod{len(made) + 1}")
        made.append(pod)
        return pod

    make.pvc = pvc  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for pod in made:
            pod.remove()


def publish(pod: Pod, count: int) -> None:
    with connect(pod) as connection:
        channel = connection.channel()
        channel.confirm_select()  # each publish waits for the broker's confirm
        channel.queue_declare("celery", durable=True, auto_delete=False)
        for index in range(count):
            channel.basic_publish(amqp.Message(f"task {index}", delivery_mode=2), routing_key="celery")


def queued(pod: Pod) -> tuple[int, str]:
    with connect(pod) as connection:
        channel = connection.channel()
        _, count, _ = channel.queue_declare("celery", passive=True)
        first = channel.basic_get("celery", no_ack=False)
        body = first.body if first else ""
        return count, body.decode() if isinstance(body, bytes) else body


def test_broker_pod_comes_back_with_its_messages_after_the_kubelet_re_owned_its_volume(
    pods: Any, chart: dict[tuple[str, str], Any]
) -> None:
    statefulset = chart[("StatefulSet", "workqueue-message-queue")]
    assert statefulset["spec"]["template"]["spec"]["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"

    first = pods(statefulset)
    first.start()
    wait_until_ready(first)
    # The liveness probe's CLI reaches the node: it holds the same cookie.
    assert first.exec_probe("liveness").returncode == 0, first.exec_probe("liveness").stderr
    publish(first, MESSAGES)
    assert first.stop() == 0, first.logs()[-3000:]
    assert not list(pods.pvc.rglob(".erlang.cookie")), "the cookie must not be on the PVC"

    # The new pod's volume, re-owned as the kubelet does without OnRootMismatch
    # (or when the root's group was lost, e.g. a restored snapshot).
    started = time.monotonic()
    assert kubelet_applies_fs_group(pods.pvc, first.fs_group, policy=None)
    second = pods(statefulset)
    second.start()
    wait_until_ready(second)
    print(f"\nbroker pod re-created on the re-owned PVC, ready in {time.monotonic() - started:.1f} s")
    assert second.exec_probe("liveness").returncode == 0
    assert queued(second) == (MESSAGES, "task 0")


def layout_before_the_fix(statefulset: dict[str, Any]) -> dict[str, Any]:
    """The chart's StatefulSet as it was up to 0.1.0: the PVC is HOME, the cookie from the environment."""
    old = copy.deepcopy(statefulset)
    spec = old["spec"]["template"]["spec"]
    spec.pop("initContainers")
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] not in {"home", "erlang-cookie-secret"}]
    (container,) = spec["containers"]
    container["volumeMounts"] = [
        {"name": "data", "mountPath": "/var/lib/rabbitmq"} if m["name"] == "data" else m
        for m in container["volumeMounts"]
        if m["name"] != "home"
    ]
    cookie = {"secretKeyRef": {"name": "workqueue-secret", "key": "RABBITMQ_ERLANG_COOKIE"}}
    container["env"].append({"name": "RABBITMQ_ERLANG_COOKIE", "valueFrom": cookie})
    return old


def test_the_old_layout_fails_this_way_so_the_test_above_can_fail(pods: Any, chart: dict[tuple[str, str], Any]) -> None:
    """The control: with the cookie on the PVC, the same re-creation stops the node."""
    old = layout_before_the_fix(chart[("StatefulSet", "workqueue-message-queue")])
    first = pods(old)
    first.start()
    wait_until_ready(first)
    cookie = pods.pvc / ".erlang.cookie"
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o400  # Erlang made it on the PVC
    first.stop()

    kubelet_applies_fs_group(pods.pvc, first.fs_group, policy=None)
    assert stat.S_IMODE(cookie.stat().st_mode) & 0o070
    second = pods(old)
    second.start()
    wait_until(lambda: not second.running(), 60, "the broker to give up")
    assert "must be accessible by owner only" in second.logs()
