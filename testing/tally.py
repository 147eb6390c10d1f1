"""Executions counted by the test's own tasks: fault figures no setting can switch off.

The fault tests run tasks of ``tests/integration/fault_tasks.py``, whose
worker gets ``WORKQUEUE_TEST_TALLY`` (a file of the test's own).  Every
delivery of a task to a pool process (a ``task_prerun`` receiver: before
anything of the project runs, so a copy the worker then skips is counted
too) and every start and end of a counted task's body appends one line:
``<task id> <event> <redelivered 0|1>``.  Appends of a short line to a
local file with ``O_APPEND`` are atomic, and a killed process cannot take
back what it wrote, so the tally holds whatever a fault did.

Figures read from it: *duplicated* (a body that ran to its end more than
once), *redelivered* (a task delivered at least once with RabbitMQ's
``redelivered`` flag), *executions* (body starts).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path

TALLY_ENV = "WORKQUEUE_TEST_TALLY"
DELIVERY, START, DONE = "delivery", "start", "done"


def record(event: str, task_id: str, redelivered: bool = False) -> None:
    """Append one event (nothing when the process has no tally)."""
    path = os.environ.get(TALLY_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{task_id} {event} {int(redelivered)}\n".encode())
    finally:
        os.close(fd)


@dataclasses.dataclass
class Tally:
    """Counts per task id, read back from a tally file."""

    deliveries: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    redeliveries: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    starts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    dones: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @classmethod
    def read(cls, path: Path) -> Tally:
        tally = cls()
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines():
            task_id, event, redelivered = line.split()
            if event == DELIVERY:
                tally.deliveries[task_id] += 1
                tally.redeliveries[task_id] += int(redelivered)
            elif event == START:
                tally.starts[task_id] += 1
            elif event == DONE:
                tally.dones[task_id] += 1
        return tally

    def duplicated(self, ids: set[str]) -> int:
        """Tasks whose body ran to its end more than once (at-least-once delivery at work)."""
        return sum(1 for task_id, n in self.dones.items() if n > 1 and task_id in ids)

    def redelivered(self, ids: set[str]) -> int:
        """Tasks delivered at least once with RabbitMQ's redelivered flag."""
        return sum(1 for task_id, n in self.redeliveries.items() if n and task_id in ids)

    def executions(self, ids: set[str]) -> int:
        return sum(n for task_id, n in self.starts.items() if task_id in ids)
