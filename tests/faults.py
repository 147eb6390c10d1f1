"""Helpers for the fault-injection tests: bulk submission, result collection, figures."""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery, states
from kombu import Connection

from worker.catalogue import CATALOGUE, TaskSpec
from worker.celery_app import DEFAULT_QUEUE, close_celery, create_celery
from worker.settings import Settings
from worker.submission import dependency_errors, describe, submit


class Client:
    """An in-process client using the exact submission path of the API."""

    def __init__(self, broker_url: str, backend_url: str, tmp_dir: Path, queue_type: str = "classic") -> None:
        settings = Settings(
            broker_url=broker_url, result_backend=backend_url, runtime_dir=str(tmp_dir), queue_type=queue_type
        )
        self.app: Celery = create_celery(settings, role="client")
        self.errors = dependency_errors(self.app)

    def submit(self, task: str | TaskSpec, **kwargs: Any) -> str:
        spec = CATALOGUE[task] if isinstance(task, str) else task
        return submit(self.app, spec, kwargs, self.errors)

    def describe(self, task_id: str) -> dict[str, Any] | None:
        return describe(self.app, task_id, self.errors)

    def states(self, ids: Iterable[str], batch: int = 1000) -> dict[str, dict]:
        """Celery's stored meta for each id ({} when nothing was stored yet)."""
        backend = self.app.backend
        ids = list(ids)
        found: dict[str, dict] = {}
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            raws = backend.mget([backend.get_key_for_task(i) for i in chunk])
            for task_id, raw in zip(chunk, raws, strict=True):
                found[task_id] = backend.decode(raw) if raw else {}
        return found

    def unfinished(self, ids: Iterable[str]) -> list[str]:
        return [i for i, meta in self.states(ids).items() if meta.get("status") not in states.READY_STATES]

    def queue_depth(self, broker_url: str) -> int:
        with Connection(broker_url) as connection:
            channel = connection.default_channel
            return channel.queue_declare(DEFAULT_QUEUE, passive=True).message_count

    def close(self) -> None:
        close_celery(self.app)


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
