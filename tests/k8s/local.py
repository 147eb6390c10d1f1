"""Rendered containers run as local processes against private servers, as a kubelet would run them.

A ``Cluster`` takes the objects of a render (or of deploy/), the ConfigMap's
data, the Secrets' data by name and, for Secret volumes, where their files
are here (``mounts``: the container's path -> a local folder).  It builds a
container's environment the way the kubelet does (envFrom, env, secretKeyRef,
``$(VAR)`` in args), starts or runs its args with ``run.sh``, and executes
its probes within their own timeouts.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import redis
import requests

from dev import manifests as kube
from dev.manifests import REPO, containers, load_all
from testing.processes import _SCRUBBED_PREFIXES
from testing.servers import Process, RabbitMQ, Redis, free_port, new_server_dir, wait_until

C = TypeVar("C", bound="Cluster")


class Cluster:
    """The manifests' containers as local processes against private servers."""

    def __init__(
        self,
        objects: dict[tuple[str, str], dict[str, Any]],
        config: dict[str, str],
        secrets: Mapping[str, dict[str, str]],
        mounts: Mapping[str, Path] | None = None,
    ) -> None:
        self.dir = new_server_dir("manifests")
        self.objects = objects
        self.config = config
        self.secrets = secrets
        self.mounts = dict(mounts or {})
        self.api_port = free_port()
        self.processes: list[Process] = []

    @property
    def secret(self) -> dict[str, str]:
        """The chart's own Secret (``workqueue-secret``)."""
        return self.secrets["workqueue-secret"]

    def container(self, kind: str, name: str, container_name: str) -> dict[str, Any]:
        return next(c for c in containers(self.objects[(kind, name)]) if c["name"] == container_name)

    def env(self, c: dict[str, Any], runtime: str) -> dict[str, str]:
        """The container's environment as the kubelet builds it, plus a PATH like the image's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
        for source in c.get("envFrom", []):
            assert source["configMapRef"]["name"] == "workqueue-config"
            env.update(self.config)
        for entry in c.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif "fieldRef" in entry["valueFrom"]:
                # The pod's name, or a label the Job controller puts on its pods.
                field = entry["valueFrom"]["fieldRef"]["fieldPath"]
                assert field == "metadata.name" or field.startswith("metadata.labels['batch.kubernetes.io/"), field
                env[entry["name"]] = f"{runtime}-pod" if field == "metadata.name" else f"{runtime}-job"
            else:
                ref = entry["valueFrom"]["secretKeyRef"]
                data = self.secrets[ref["name"]]
                if ref.get("optional") and ref["key"] not in data:
                    continue  # the kubelet leaves the variable unset (API_READ_TOKENS)
                env[entry["name"]] = data[ref["key"]]
        mounted = {m["mountPath"] for m in c.get("volumeMounts", [])}
        for path, local in self.mounts.items():
            # A Secret's files are where the container mounts them: here, in a local folder.
            named = [name for name, value in env.items() if value.startswith(path)]
            assert not named or path in mounted, f"{c['name']} reads {named} from {path}, which it does not mount"
            env.update({name: env[name].replace(path, str(local), 1) for name in named})
        if c["name"] == "api":
            assert c["ports"][0]["containerPort"] == int(env["PORT"])
            env["PORT"] = str(self.api_port)  # a free port here instead of 8000
        # The image has /app (run.sh, celery_status.sh) and its Python on PATH; the
        # emptyDir at /tmp holds RUNTIME_DIR.
        env["PATH"] = os.pathsep.join([str(REPO), str(Path(sys.executable).parent), env.get("PATH", "")])
        env["RUNTIME_DIR"] = str(self.dir / runtime)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def log(self, runtime: str, size: int = 30_000) -> str:
        """The end of what a process started as ``runtime`` printed, for a failure's message."""
        path = self.dir / f"{runtime}.log"
        text = path.read_text(errors="replace") if path.exists() else f"({path.name} was not written)"
        return f"--- {runtime}'s log ---\n{text[-size:]}"

    def start(self, c: dict[str, Any], runtime: str) -> Process:
        process = Process(
            [str(REPO / "run.sh"), *c["args"]], self.env(c, runtime), self.dir / f"{runtime}.log", cwd="/"
        )
        self.processes.append(process)
        return process

    def run(
        self, c: dict[str, Any], runtime: str, timeout: float, args: list[str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = self.env(c, runtime)
        argv = [str(REPO / "run.sh"), *(self.expand(arg, env) for arg in (args or c["args"]))]
        return subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=timeout)

    def expand(self, arg: str, env: dict[str, str]) -> str:
        """What the kubelet does to args ($(VAR) from the container's env), and Service names -> here."""
        arg = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)
        return arg.replace("http://workqueue-api:8000", f"http://127.0.0.1:{self.api_port}")

    def exec_probe(self, c: dict[str, Any], kind: str, runtime: str) -> subprocess.CompletedProcess[str]:
        """The probe's command, as `kubectl exec` / the kubelet runs it, within its timeout."""
        probe = c[f"{kind}Probe"]
        return subprocess.run(
            probe["exec"]["command"], env=self.env(c, runtime), cwd="/", capture_output=True, text=True,
            timeout=probe.get("timeoutSeconds", 1),
        )  # fmt: skip

    def http_probe(self, c: dict[str, Any], kind: str) -> int:
        probe = c[f"{kind}Probe"]
        assert probe["httpGet"]["port"] == c["ports"][0]["name"]
        url = f"http://127.0.0.1:{self.api_port}{probe['httpGet']['path']}"
        try:
            return requests.get(url, timeout=probe["timeoutSeconds"]).status_code
        except requests.RequestException:
            return 0

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


def wait_for_probe(check: Any, probe: dict[str, Any], what: str) -> None:
    """Succeeds within the probe's own budget (periodSeconds x failureThreshold)."""
    wait_until(check, probe["periodSeconds"] * probe.get("failureThreshold", 3), what, interval=0.2)


def deploy_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Objects of deploy/*.yaml (not optional/) by (kind, name)."""
    files = {path: text for path, text in kube.deploy_files().items() if path.parent == Path(".")}
    return {(obj["kind"], obj["metadata"]["name"]): obj for _, obj in load_all(files)}


def for_deploy(rabbitmq: RabbitMQ, redis_server: Redis, cls: type[C] = Cluster) -> C:  # type: ignore[assignment]
    """deploy/'s objects, with the Secret that deploy/README.md creates, against these servers."""
    objects = deploy_objects()
    config = dict(objects[("ConfigMap", "workqueue-config")]["data"])
    # What `kubectl create secret` of deploy/README.md holds.
    secret = {key: secrets.token_hex(24) for key in ("RABBITMQ_PASSWORD", "REDIS_PASSWORD", "API_TOKENS")}
    rabbitmq.ctl("add_user", config["RABBITMQ_USERNAME"], stdin=secret["RABBITMQ_PASSWORD"])
    rabbitmq.ctl("set_permissions", "-p", config["RABBITMQ_VHOST"], config["RABBITMQ_USERNAME"], ".*", ".*", ".*")
    redis.Redis(port=redis_server.port).config_set("requirepass", secret["REDIS_PASSWORD"])
    # Only where the servers are differs from the cluster: the Services' names become 127.0.0.1.
    config.update(
        RABBITMQ_HOST="127.0.0.1", RABBITMQ_PORT=str(rabbitmq.port),
        REDIS_HOST="127.0.0.1", REDIS_PORT=str(redis_server.port),
    )  # fmt: skip
    return cls(objects, config, {"workqueue-secret": secret})
