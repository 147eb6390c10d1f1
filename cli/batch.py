"""Batch mode of ``submit_tasks.py``: submit a set of tasks, wait for all of them, say how it went.

What a Kubernetes Job (or a CronJob's run) executes: N copies of one task
(``--task add --args '[2, 3]' --count 100``) or tasks read as JSON lines
from a file or stdin (``--from tasks.jsonl``, one ``{"task", "args",
"kwargs"}`` per line).  Every line is validated before anything is sent, so
bad input submits nothing.  A progress line is printed as each task
finishes; the exit code is 0 only if every task succeeded, 1 otherwise (a
failure, or tasks still pending at ``--timeout``), 2 for bad input and 143
after SIGTERM.  The tasks are queued before the waiting starts, so stopping
this process loses none of them: the summary lists what was still pending.

With ``--idempotency-key K`` the i-th task is submitted under ``K:i``: a Job
that runs twice (a retried pod, two CronJob runs for one slot) submits each
task once.  ``--no-wait`` submits and exits once the broker confirmed.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from celery import states

from workqueue.catalogue import Catalogue, TaskDefinition, ValidationFailed
from workqueue.client import DependencyUnavailable, IdempotencyConflict, PublishUnconfirmed, TaskClient

POLL_SECONDS = 0.5
SHOWN_CHARACTERS = 200  # of a result in a progress line
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TERMINATED = 0, 1, 2, 143


class BadInput(ValueError):
    """A batch line or argument that does not match the catalogue."""


@dataclasses.dataclass(frozen=True)
class Item:
    definition: TaskDefinition
    kwargs: dict[str, Any]


def parse_item(tasks: Catalogue, body: Any, where: str) -> Item:
    if not isinstance(body, dict) or set(body) - {"task", "args", "kwargs"}:
        raise BadInput(f'{where}: expected {{"task": ..., "args": [...], "kwargs": {{...}}}}')
    args, kwargs = body.get("args", []), body.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise BadInput(f"{where}: args must be a JSON array and kwargs a JSON object")
    try:
        definition = tasks.lookup(body.get("task"))
        return Item(definition, definition.bind(args, kwargs))
    except ValidationFailed as exc:
        raise BadInput(f"{where}: {exc.message}") from None


def read_lines(tasks: Catalogue, lines: Iterable[str]) -> list[Item]:
    """Items of a JSON-lines input (blank lines skipped); ``BadInput`` names the first bad line."""
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except ValueError as exc:
            raise BadInput(f"line {number}: not JSON ({exc})") from None
        items.append(parse_item(tasks, body, f"line {number}"))
    if not items:
        raise BadInput("no tasks in the input")
    return items


@dataclasses.dataclass
class Outcome:
    submitted: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> label
    finished: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> final state
    unconfirmed: list[str] = dataclasses.field(default_factory=list)  # may be queued: never confirmed in time
    conflicts: int = 0  # keys used for another request

    @property
    def pending(self) -> list[str]:
        return [task_id for task_id in self.submitted if task_id not in self.finished]


class Batch:
    def __init__(
        self,
        client: TaskClient,
        items: list[Item],
        out: Callable[[str], None],
        timeout: float,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> None:
        self.client = client
        self.items = items
        self.out = out
        self.deadline = time.monotonic() + timeout
        self.key = idempotency_key
        self.wait = wait
        self.stop = threading.Event()  # set by SIGTERM
        self.outcome = Outcome()

    def run(self) -> int:
        for index, item in enumerate(self.items):
            if not self._submit(index, item):
                break
        if self.wait and not self.stop.is_set():
            self._wait()
        return self._summary()

    def _submit(self, index: int, item: Item) -> bool:
        label = f"{item.definition.name}({', '.join(f'{k}={v!r}' for k, v in item.kwargs.items())})"
        key = None if self.key is None else f"{self.key}:{index}"
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                if key is None:
                    task_id = self.client.submit(item.definition, item.kwargs)
                else:
                    task_id, replayed = self.client.submit_once(item.definition, item.kwargs, key)
                    if replayed:
                        label += " (already submitted under its idempotency key)"
            except DependencyUnavailable as exc:  # nothing was queued: trying again is safe
                self.out(f"could not submit {label}: {exc}; retrying")
                self.stop.wait(1.0)
                continue
            except PublishUnconfirmed as exc:
                # It may or may not be queued: repeating under the key it names
                # publishes the same task again, never a second one.
                self.out(f"{label}: {exc}; repeating under its idempotency key")
                key = exc.idempotency_key
                if exc.task_id not in self.outcome.unconfirmed:
                    self.outcome.unconfirmed.append(exc.task_id)
                self.stop.wait(1.0)
                continue
            except IdempotencyConflict as exc:
                if exc.kind == "mismatch":
                    self.out(f"could not submit {label}: key {key} was used for another request (task {exc.task_id})")
                    self.outcome.conflicts += 1
                    return True
                self.out(f"{label}: another request with key {key} is publishing it; waiting")
                self.stop.wait(1.0)
                continue
            if task_id in self.outcome.unconfirmed:
                self.outcome.unconfirmed.remove(task_id)
            self.outcome.submitted[task_id] = label
            self.out(f"submitted {task_id} {label}")
            return True
        return False

    def _wait(self) -> None:
        total = len(self.outcome.submitted)
        while self.outcome.pending and not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                views = self.client.describe_many(self.outcome.pending)
            except DependencyUnavailable as exc:
                self.out(f"result store unavailable: {exc}")
                views = {}
            for task_id, view in views.items():
                if view and view["state"] in states.READY_STATES:
                    self.outcome.finished[task_id] = view["state"]
                    shown = json.dumps(view.get("result") if view["state"] == states.SUCCESS else view.get("error"))
                    if len(shown) > SHOWN_CHARACTERS:  # a progress line, not the result (GET the task for it)
                        shown = shown[:SHOWN_CHARACTERS] + f"… ({len(shown)} characters)"
                    done = len(self.outcome.finished)
                    label = self.outcome.submitted[task_id]
                    self.out(f"[{done}/{total}] {task_id} {label} -> {view['state']} {shown}")
            self.stop.wait(POLL_SECONDS)

    def _summary(self) -> int:
        outcome = self.outcome
        succeeded = sum(state == states.SUCCESS for state in outcome.finished.values())
        failed = len(outcome.finished) - succeeded
        never = len(self.items) - len(outcome.submitted) - len(outcome.unconfirmed)
        line = f"batch: {len(self.items)} tasks, {len(outcome.submitted)} submitted"
        if self.wait:
            line += f", {succeeded} succeeded, {failed} failed, {len(outcome.pending)} still pending"
        else:
            line += " (queued; not waited for)"
        if never:
            line += f", {never} not submitted"
        if outcome.unconfirmed:
            line += f", {len(outcome.unconfirmed)} unconfirmed by the broker (they may be queued)"
        if outcome.conflicts:
            line += f", {outcome.conflicts} refused (their key was used for another request)"
        self.out(line)
        if self.wait and outcome.pending:
            self.out("still pending (queued, they will run): " + " ".join(outcome.pending))
        if self.stop.is_set():
            return EXIT_TERMINATED
        if not self.wait:
            return EXIT_OK if not never and not outcome.unconfirmed and not outcome.conflicts else EXIT_FAILED
        return EXIT_OK if succeeded == len(self.items) else EXIT_FAILED
