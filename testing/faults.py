"""Helpers of the fault-injection tests and benchmarks: a client for private servers, figures."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import states

from testing.tally import Tally
from workqueue.client import TaskClient
from workqueue.settings import Settings

# The p99 above which an API counts as blocked, while under attack or with a
# dependency hung: a bound for a hang, not a speed.  What it catches takes
# seconds (a sync worker held by a slow client until its 6 s read timeout, a
# hung dependency's 2 s, the validation that once cost 1.26 s of CPU); a healthy
# API measures 2-30 ms quiet, and up to 150 ms with the suite's parallel workers
# busy on the same 2 cores.  The kubelet gives /healthz 3 s (timeoutSeconds).
BLOCKED_P99_SECONDS = 0.5


def make_client(broker_url: str, backend_url: str, tmp_dir: Path, **overrides: Any) -> TaskClient:
    """A ``TaskClient`` (the API's own submission path) for these servers."""
    settings = Settings(broker_url=broker_url, result_backend=backend_url, runtime_dir=str(tmp_dir), **overrides)
    return TaskClient(settings.validated())


def unfinished(client: TaskClient, ids: Iterable[str]) -> list[str]:
    """The ids whose task has not reached a final state."""
    return [i for i, view in client.describe_many(ids).items() if not view or view["state"] not in states.READY_STATES]


# Every figure a test reports; conftest prints them in pytest's terminal
# summary, so they show in CI's output even though passing tests' output is captured.
REPORTED: list[str] = []


def report(line: str) -> str:
    """Record one figures line (and print it, for ``pytest -s``)."""
    REPORTED.append(line)
    print("\n" + line)
    return line


@dataclass
class Figures:
    """What a fault test reports: submitted, completed, lost, duplicated, redelivered, recovery time.

    ``lost`` and ``completed`` come from the stored states; ``duplicated``
    and ``redelivered`` from the tasks' own tally (``testing/tally.py``),
    which no worker setting can switch off.
    """

    name: str
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    redelivered: int = 0
    recovery_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def measure(self, client: TaskClient, ids: list[str], tally_file: Path) -> Figures:
        """Fill in every count for the tasks ``ids`` (submitted is their number)."""
        views = client.describe_many(ids)
        self.submitted = len(ids)
        self.completed = sum(1 for v in views.values() if v and v["state"] == states.SUCCESS)
        self.failed = sum(1 for v in views.values() if v and v["state"] == states.FAILURE)
        self.lost = self.submitted - self.completed - self.failed
        counted = Tally.read(tally_file)
        self.duplicated = counted.duplicated(set(ids))
        self.redelivered = counted.redelivered(set(ids))
        return self

    def report(self) -> str:
        parts = [
            f"submitted={self.submitted}",
            f"completed={self.completed}",
            f"failed={self.failed}",
            f"lost={self.lost}",
            f"duplicated={self.duplicated}",
            f"redelivered={self.redelivered}",
        ]
        if self.recovery_seconds is not None:
            parts.append(f"recovery={self.recovery_seconds:.1f}s")
        parts += [f"{k}={v}" for k, v in self.extra.items()]
        return report(f"[fault figures] {self.name}: " + " ".join(parts))
