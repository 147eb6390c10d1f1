"""Submit example tasks and print their results as they complete.

As in the book: run it from a temporary pod (``python3 submit_tasks.py``)
and it submits ``add`` and ``mul`` about every five seconds until stopped.
``--count`` stops after N tasks, ``--rate`` submits at a steady rate instead
of in rounds (a queue-side load generator), ``--task`` picks the tasks.
Tasks go straight to the broker, with the same record and publisher
confirm as the HTTP API, so ``GET /tasks/<id>`` shows them too.

``--batch`` (or ``--from FILE``, ``--no-wait``, ``--idempotency-key``)
switches to batch mode for Jobs and CronJobs: see ``cli/batch.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import states

from cli.batch import EXIT_BAD_INPUT, BadInput, Batch, Item, parse_item, read_lines
from workqueue import catalogue
from workqueue.client import DependencyUnavailable, TaskClient
from workqueue.settings import from_env_or_exit, tool_settings_source

POLL_SECONDS = 0.05


# Plausible arguments for the reference tasks: what the round and rate modes
# submit.  Tasks of TASK_MODULES have none; batch mode submits them with the
# arguments given (--args/--kwargs, --from).
EXAMPLES: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "add": lambda rng: {"x": rng.randint(0, 100), "y": rng.randint(0, 100)},
    "mul": lambda rng: {"x": rng.randint(0, 100), "y": rng.randint(0, 100)},
    "xsum": lambda rng: {"numbers": [rng.randint(0, 100) for _ in range(10)]},
    "dump_context": lambda rng: {"x": rng.randint(0, 100), "y": "hello"},
    "pi": lambda rng: {"digits": 100},
    "sleep": lambda rng: {"seconds": 1},
    "flaky": lambda rng: {"failures": 1},
}


def example_args(name: str, rng: random.Random) -> dict[str, Any]:
    """Plausible arguments for a task of ``EXAMPLES``."""
    return EXAMPLES[name](rng)


@dataclass
class Pending:
    label: str
    submitted: float


@dataclass
class Tally:
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    pending: dict[str, Pending] = field(default_factory=dict)


def parse_args(argv: Sequence[str] | None, tasks: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=0, help="stop after N tasks (default: run until stopped)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between rounds (default: 5)")
    parser.add_argument("--rate", type=float, default=0.0, help="submit this many tasks per second instead of rounds")
    parser.add_argument(
        "--task",
        action="append",
        choices=sorted(tasks if tasks is not None else catalogue.load()),
        help="task to submit (repeatable; default: add and mul)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for each result; in batch mode, for all (60)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    batch = parser.add_argument_group(
        "batch mode (a Job or CronJob): submit, wait for all, exit 0 only if all succeeded"
    )
    batch.add_argument("--batch", action="store_true", help="--count copies of one --task with --args/--kwargs")
    batch.add_argument(
        "--from", dest="source", metavar="FILE", help='JSON lines {"task", "args", "kwargs"}; - is stdin'
    )
    batch.add_argument("--args", default="[]", help="the task's positional arguments, as a JSON array")
    batch.add_argument("--kwargs", default="{}", help="the task's keyword arguments, as a JSON object")
    batch.add_argument("--idempotency-key", help="submit the i-th task under KEY:i, once however often this runs")
    batch.add_argument("--no-wait", action="store_true", help="exit once the broker confirmed every task")
    args = parser.parse_args(argv)
    if args.count < 0 or args.interval < 0 or args.rate < 0 or args.timeout <= 0:
        parser.error("--count, --interval and --rate must be >= 0 and --timeout > 0")
    args.batch_mode = bool(args.batch or args.source or args.no_wait or args.idempotency_key)
    if args.batch_mode and not args.source and len(args.task or []) != 1:
        parser.error("batch mode needs exactly one --task (or --from FILE)")
    without_examples = sorted(set(args.task or ()) - set(EXAMPLES))
    if not args.batch_mode and without_examples:
        parser.error(
            f"--task {without_examples[0]}: no example arguments to submit it with; "
            f"use batch mode with its arguments (--batch --task {without_examples[0]} --args '[...]')"
        )
    args.task = args.task or ["add", "mul"]
    return args


def batch_items(args: argparse.Namespace, tasks: catalogue.Catalogue) -> list[Item]:
    """The tasks a batch submits; ``BadInput`` names what is wrong."""
    if args.source:
        if args.source == "-":
            return read_lines(tasks, sys.stdin)
        try:
            with open(args.source, encoding="utf-8") as handle:
                return read_lines(tasks, handle)
        except OSError as exc:
            raise BadInput(f"cannot read {args.source}: {exc.strerror}") from None
    try:
        body = {"task": args.task[0], "args": json.loads(args.args), "kwargs": json.loads(args.kwargs)}
    except ValueError as exc:
        raise BadInput(f"--args/--kwargs: not JSON ({exc})") from None
    item = parse_item(tasks, body, "--task/--args/--kwargs")
    return [item] * (args.count or 1)


def run_batch(client: TaskClient, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    try:
        items = batch_items(args, client.catalogue)
    except BadInput as exc:
        print(f"submit_tasks: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    batch = Batch(client, items, out, args.timeout, args.idempotency_key, wait=not args.no_wait)
    # SIGTERM (a Job's pod deleted): stop waiting and say what is still pending.
    signal.signal(signal.SIGTERM, lambda signum, frame: batch.stop.set())
    return batch.run()


class GaveUp(RuntimeError):
    """A dependency stayed unavailable for longer than ``--timeout``."""


class Submitter:
    def __init__(self, client: TaskClient, args: argparse.Namespace, out: Callable[[str], None]) -> None:
        self.client = client
        self.args = args
        self.out = out
        self.rng = random.Random()
        self.tally = Tally()
        self.failing_since: float | None = None  # when submitting started to fail
        self.store_error = ""  # the result store's last error, said once

    def say(self, text: str) -> None:
        if not self.args.quiet:
            self.out(f"[{time.strftime('%H:%M:%S')}] {text}")

    def submit_one(self, name: str) -> bool:
        kwargs = example_args(name, self.rng)
        try:
            task_id = self.client.submit(name, kwargs)
        except DependencyUnavailable as exc:
            # Nothing was queued: trying again is safe, for up to --timeout.
            now = time.monotonic()
            self.failing_since = self.failing_since or now
            waited = now - self.failing_since
            if waited >= self.args.timeout:
                # The bound given, then what it took (an attempt itself takes time: DNS, a connect timeout).
                raise GaveUp(f"gave up after {self.args.timeout:g} s (--timeout; tried {waited:.1f} s): {exc}") from exc
            self.say(f"could not submit {name}: {exc}; retrying for up to {self.args.timeout - waited:.0f} s more")
            return False
        self.failing_since = None
        label = f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
        self.tally.submitted += 1
        self.tally.pending[task_id] = Pending(label, time.monotonic())
        self.say(f"submitted {label} id={task_id}")
        return True

    def poll(self) -> None:
        """Print results that arrived; count the ones that waited too long."""
        if not self.tally.pending:
            return
        try:
            views: dict[str, dict[str, Any] | None] = self.client.describe_many(self.tally.pending)
        except DependencyUnavailable as exc:
            if str(exc) != self.store_error:  # once, not at every poll
                self.say(f"could not read results: {exc}")
            self.store_error = str(exc)
            views = dict.fromkeys(self.tally.pending)  # still pending: each gives up at its --timeout
        else:
            self.store_error = ""
        now = time.monotonic()
        for task_id, view in views.items():
            pending = self.tally.pending[task_id]
            state = view["state"] if view else states.PENDING
            if view and state in states.READY_STATES:
                del self.tally.pending[task_id]
                ok = state == states.SUCCESS
                self.tally.succeeded += ok
                self.tally.failed += not ok
                shown = view.get("result") if ok else (view.get("error") or {}).get("message")
                self.say(f"{pending.label} -> {shown!r} ({state} in {now - pending.submitted:.3f} s) id={task_id}")
            elif now - pending.submitted > self.args.timeout:
                del self.tally.pending[task_id]
                self.tally.timed_out += 1
                self.say(
                    f"{pending.label} gave no result within {self.args.timeout} s (last state {state}) id={task_id}"
                )

    def run(self) -> int:
        started = time.monotonic()
        try:
            self.submit_and_wait()
        except GaveUp as exc:
            self.summary(started)
            print(f"submit_tasks: {exc}; servers from {tool_settings_source()}", file=sys.stderr, flush=True)
            return 1
        return self.summary(started)

    def submit_and_wait(self) -> None:
        args = self.args
        started = time.monotonic()
        next_submit = started
        cycle = 0
        while not args.count or self.tally.submitted < args.count:
            now = time.monotonic()
            if now >= next_submit:
                name = args.task[cycle % len(args.task)]
                if self.submit_one(name):
                    cycle += 1
                    if args.rate:
                        next_submit += 1.0 / args.rate
                    elif cycle % len(args.task) == 0:
                        next_submit = now + args.interval
                else:
                    next_submit = now + 1.0  # again soon: the outage is bounded by --timeout
            self.poll()
            time.sleep(max(0.0, min(POLL_SECONDS, next_submit - time.monotonic())))
        while self.tally.pending:
            self.poll()
            time.sleep(POLL_SECONDS)

    def summary(self, started: float) -> int:
        elapsed = time.monotonic() - started
        t = self.tally
        self.out(
            f"submitted {t.submitted}, succeeded {t.succeeded}, failed {t.failed}, "
            f"timed out {t.timed_out} in {elapsed:.2f} s ({t.submitted / elapsed:.1f} tasks/s)"
        )
        return 0 if t.succeeded == t.submitted else 1


def main(argv: Sequence[str] | None = None) -> int:
    # Outside a cluster, the servers of a running ./dev.sh up when the environment names none.
    settings = from_env_or_exit(local_session=True)
    tasks = catalogue.for_settings(settings)
    args = parse_args(argv, list(tasks))
    client = TaskClient(settings, tasks)

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        if args.batch_mode:
            return run_batch(client, args, out)
        return Submitter(client, args, out).run()
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
