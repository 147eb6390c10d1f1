"""checkov policy scans of deploy/ and of the rendered chart.

checkov pins ``packaging<24`` and pytest needs ``packaging>=24``, so it cannot
share the test environment: ``checkov()`` installs the exact versions of
``tests/k8s/checkov-requirements.txt`` into a venv of its own under ``.venv/``
(once; ~25 s) and runs it offline (``--skip-download``).

A scan passes when every failed check is in ``ALLOWED_FAILURES``, each entry
saying why the check does not apply, for all objects or for the named ones.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dev.manifests import REPO

REQUIREMENTS = REPO / "tests" / "k8s" / "checkov-requirements.txt"
VENV = REPO / ".venv" / "tools" / "checkov"

# check id -> (why it does not apply, objects it may fail for as "Kind/name"; None: all)
ALLOWED_FAILURES: dict[str, tuple[str, frozenset[str] | None]] = {
    "CKV_K8S_43": (
        "Image digests: the workqueue image is built by its users (no digest exists before they push it); "
        "third-party images are pinned to a patch release tag.",
        None,
    ),
    "CKV_K8S_15": (
        "imagePullPolicy Always: tags are pinned, and Always breaks images loaded into a local cluster "
        "(kind load, minikube image load).",
        None,
    ),
    "CKV_K8S_35": (
        "Secrets as files: workqueue/settings.py reads its settings (passwords included) from the environment, "
        "as do RabbitMQ (RABBITMQ_DEFAULT_PASS, RABBITMQ_ERLANG_COOKIE) and Redis' start script, which writes "
        "it into a config file (never argv); "
        "only the keys each container needs are mapped.",
        None,
    ),
    "CKV_K8S_21": (
        "Default namespace: the manifests carry no namespace on purpose; `kubectl apply -n` and "
        "`helm install --namespace` choose it.",
        None,
    ),
    "CKV_K8S_40": (
        "High UID: the official RabbitMQ and Redis images run as their own system user 999, which owns "
        "their data on the PVC; the workqueue pods run as 10001.",
        frozenset({"StatefulSet/workqueue-message-queue", "StatefulSet/workqueue-redis"}),
    ),
    "CKV_K8S_8": (
        "Liveness probe: the helm test pod runs to completion in seconds; there is nothing to restart.",
        frozenset({"Pod/workqueue-test-submit"}),
    ),
    "CKV_K8S_9": (
        "Readiness probe: the helm test pod serves no traffic.",
        frozenset({"Pod/workqueue-test-submit"}),
    ),
}


@dataclass(frozen=True)
class Failure:
    check_id: str
    kind: str
    name: str
    title: str
    file: str

    @property
    def target(self) -> str:
        return f"{self.kind}/{self.name}"

    def allowed(self) -> bool:
        entry = ALLOWED_FAILURES.get(self.check_id)
        return entry is not None and (entry[1] is None or self.target in entry[1])


@dataclass(frozen=True)
class Scan:
    passed: int
    failures: list[Failure]
    resources: int

    def unexpected(self) -> list[Failure]:
        return [f for f in self.failures if not f.allowed()]


def checkov() -> Path:
    """The checkov executable of the tool venv, installed when missing or outdated.

    Two scans may ask at once (pytest-xdist workers): a lock next to the
    venv lets one install while the other waits, then finds it installed.
    """
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "checkov.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _installed_checkov()


def _installed_checkov() -> Path:
    executable = VENV / "bin" / "checkov"
    stamp = VENV / "requirements.txt"
    wanted = REQUIREMENTS.read_text()
    if executable.exists() and stamp.exists() and stamp.read_text() == wanted:
        return executable
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
    subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(REQUIREMENTS)],
        check=True, timeout=900,
    )  # fmt: skip
    stamp.write_text(wanted)
    return executable


def scan(directory: Path) -> Scan:
    """Run checkov's kubernetes checks on every YAML file under ``directory``."""
    result = subprocess.run(
        [str(checkov()), "--directory", str(directory), "--framework", "kubernetes", "--skip-download",
         "--quiet", "--compact", "--output", "json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode not in (0, 1):
        raise RuntimeError(f"checkov exited {result.returncode}:\n{result.stderr[-3000:]}")
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failures: list[Failure] = []
    passed = resources = 0
    for report in reports:
        passed += report["summary"]["passed"]
        resources += report["summary"]["resource_count"]
        for check in report["results"]["failed_checks"]:
            # "Kind.namespace.name" (graph checks append the pod's labels after the name)
            kind, _namespace, rest = check["resource"].split(".", 2)
            failures.append(
                Failure(check["check_id"], kind, rest.split(".", 1)[0], check["check_name"], check["file_path"])
            )
    return Scan(passed, failures, resources)


def explain(failures: list[Failure]) -> str:
    return "\n".join(f"{f.check_id} {f.target} ({f.file}): {f.title}" for f in failures)
