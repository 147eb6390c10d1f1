"""Podman for the container tests, configured by ``scripts/podman-env.sh``.

The script installs and configures podman for this kind of sandbox and
builds the image; this module runs containers from it the way Kubernetes
runs the Deployment's pods: as the image's non-root user, with a read-only
root filesystem and one writable ``/tmp`` (the emptyDir), on the host
network so they reach the tests' private RabbitMQ and Redis on 127.0.0.1.

Every container carries a label with the pid of the test run that started
it: teardown removes a run's own containers, and the next run removes those
of a run that died without cleaning up.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from testing.servers import wait_until
from workqueue.processes import process_alive

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "podman-env.sh"
IMAGE_TAG = "localhost/workqueue:test"
OWNER_LABEL = "workqueue.test.owner"
APP_UID = 10001
# The pod's emptyDir: the one writable path of the read-only root.
TMPFS = "/tmp:rw,mode=1777,size=64m"


class PodmanUnavailable(RuntimeError):
    """podman could not be installed, configured or run here."""


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    output = (result.stderr or "").strip() or (result.stdout or "").strip()
    return "\n".join(output.splitlines()[-25:])


class Podman:
    """The ``podman`` command with this project's configuration."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)

    @classmethod
    def configure(cls) -> Podman:
        """Install and configure podman (``podman-env.sh env``); raise PodmanUnavailable."""
        try:
            result = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PodmanUnavailable(f"{SCRIPT.name} env failed: {exc}") from exc
        if result.returncode != 0:
            raise PodmanUnavailable(f"{SCRIPT.name} env failed (exit {result.returncode}):\n{_explain(result)}")
        env = dict(os.environ)
        for line in result.stdout.splitlines():
            words = shlex.split(line)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                name, value = words[1].split("=", 1)
                env[name] = value
        if "CONTAINERS_CONF" not in env or "CONTAINERS_STORAGE_CONF" not in env:
            raise PodmanUnavailable(f"{SCRIPT.name} env printed no configuration:\n{result.stdout}")
        return cls(env)

    def run(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"podman {shlex.join(args)} exited {result.returncode}:\n{_explain(result)}")
        return result

    def build(self, tag: str, timeout: float = 1200, extras: str = "") -> tuple[str, float]:
        """Build the image with ``podman-env.sh build``; return its ID and the seconds it took."""
        started = time.monotonic()
        env = {**self.env, "EXTRAS": extras}
        try:
            result = subprocess.run(
                [str(SCRIPT), "build", tag], env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise PodmanUnavailable(f"building the image took over {timeout} s") from exc
        if result.returncode != 0:
            raise PodmanUnavailable(f"building the image failed (exit {result.returncode}):\n{_explain(result)}")
        return result.stdout.split()[-1], time.monotonic() - started

    def inspect_image(self, image: str) -> dict:
        return json.loads(self.run("image", "inspect", image).stdout)[0]

    def reap_leftovers(self) -> None:
        """Remove test containers whose test run is gone (killed, crashed)."""
        listing = self.run("ps", "--all", "--filter", f"label={OWNER_LABEL}", "--format", "json").stdout
        for container in json.loads(listing or "[]"):
            owner = (container.get("Labels") or {}).get(OWNER_LABEL, "")
            if owner.isdigit() and process_alive(int(owner)):
                continue  # a live test run (perhaps another worktree's)
            self.run("rm", "--force", "--time", "0", container["Id"], check=False)


class Container:
    """One running container of the image."""

    def __init__(self, podman: Podman, name: str) -> None:
        self.podman = podman
        self.name = name

    def exec(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside, as the kubelet runs an exec probe (image user, workdir)."""
        return self.podman.run("exec", self.name, *argv, check=False, timeout=timeout)

    def inspect(self) -> dict:
        return json.loads(self.podman.run("container", "inspect", self.name).stdout)[0]

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    def exit_code(self) -> int:
        return int(self.inspect()["State"]["ExitCode"])

    def logs(self, lines: int = 60) -> str:
        result = self.podman.run("logs", "--tail", str(lines), self.name, check=False)
        return (result.stdout + result.stderr).strip()

    def stop(self, grace: int) -> float:
        """``podman stop -t grace`` (SIGTERM, SIGKILL after grace); return the seconds it took."""
        started = time.monotonic()
        self.podman.run("stop", "--time", str(grace), self.name, timeout=grace + 60)
        return time.monotonic() - started

    def wait_probe(self, flag: str, timeout: float = 90) -> None:
        """Wait until ``celery_status.sh <flag>`` passes inside the container."""
        last: subprocess.CompletedProcess[str] | None = None

        def passes() -> bool:
            nonlocal last
            last = self.exec("celery_status.sh", flag)
            if last.returncode != 0 and not self.running():
                raise RuntimeError(f"container {self.name} exited:\n{self.logs()}")
            return last.returncode == 0

        try:
            wait_until(passes, timeout, f"celery_status.sh {flag} in {self.name}", interval=0.5)
        except TimeoutError as exc:
            said = (last.stdout + last.stderr).strip() if last else ""
            raise TimeoutError(f"{exc}; probe said {said!r}; logs:\n{self.logs()}") from None


class Containers:
    """Starts containers of one image and removes every one of them at the end."""

    _serial = itertools.count(1)

    def __init__(self, podman: Podman, image: str) -> None:
        self.podman = podman
        self.image = image
        self.names: list[str] = []

    def _name(self, role: str) -> str:
        name = f"wqtest-{os.getpid()}-{next(self._serial)}-{role}"
        self.names.append(name)
        return name

    def _options(self, name: str, env: Mapping[str, str], env_files: Sequence[Path]) -> list[str]:
        options = [
            "--name", name,
            "--hostname", name,
            "--label", f"{OWNER_LABEL}={os.getpid()}",
            "--network", "host",
            "--read-only",
            "--read-only-tmpfs=false",  # podman's own tmpfs on /run, /var/tmp: Kubernetes has none
            "--tmpfs", TMPFS,
        ]  # fmt: skip
        for path in env_files:
            options += ["--env-file", str(path)]
        for key, value in env.items():
            options += ["--env", f"{key}={value}"]
        return options

    def start(self, role: str, *args: str, env: Mapping[str, str]) -> Container:
        """``podman run -d`` the image with ``args`` (the CMD: worker, api, ...)."""
        name = self._name(role)
        self.podman.run("run", "--detach", *self._options(name, env, ()), self.image, *args, timeout=120)
        return Container(self.podman, name)

    def run_once(
        self,
        role: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        env_files: Sequence[Path] = (),
        input: str | None = None,
        timeout: float = 180,
        volumes: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """``podman run --rm`` the image in the foreground, as a throwaway pod."""
        name = self._name(role)
        interactive = ["--interactive"] if input is not None else []
        mounts = [option for volume in volumes for option in ("--volume", volume)]
        return self.podman.run(
            "run", "--rm", *interactive, *mounts, *self._options(name, env or {}, env_files), self.image, *args,
            check=False, timeout=timeout, input=input,
        )  # fmt: skip

    def remove(self, container: Container) -> None:
        self.podman.run("rm", "--force", "--time", "0", container.name, check=False)
        with contextlib.suppress(ValueError):
            self.names.remove(container.name)

    def remove_all(self) -> None:
        if self.names:
            self.podman.run("rm", "--force", "--ignore", "--time", "0", *self.names, check=False, timeout=180)
            self.names.clear()
