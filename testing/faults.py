"""Helpers of the fault-injection tests and benchmarks: a client for private servers, figures."""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import states

from workqueue.client import TaskClient
from workqueue.settings import Settings


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


_SUCCEEDED = re.compile(r"Task workqueue\.\w+\[([0-9a-f-]{36})\] succeeded")
_RECEIVED = re.compile(r"Task workqueue\.\w+\[([0-9a-f-]{36})\] received")


@dataclass
class Figures:
    """What a fault test reports: submitted, completed, lost, duplicated, recovery time."""

    name: str
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    redelivered: int = 0
    recovery_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def count_executions(self, logs: Iterable[str], ids: set[str]) -> None:
        """Duplicates: tasks whose success was logged more than once (at-least-once)."""
        successes: collections.Counter[str] = collections.Counter()
        receipts: collections.Counter[str] = collections.Counter()
        for text in logs:
            successes.update(m for m in _SUCCEEDED.findall(text) if m in ids)
            receipts.update(m for m in _RECEIVED.findall(text) if m in ids)
        self.duplicated = sum(1 for n in successes.values() if n > 1)
        self.redelivered = sum(1 for n in receipts.values() if n > 1)

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
