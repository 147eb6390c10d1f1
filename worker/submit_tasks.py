"""Submit example tasks and print their results as they complete.

As in the book: run it from a temporary pod (``python3 submit_tasks.py``)
and it submits ``add`` and ``mul`` about every five seconds until stopped.
``--count`` stops after N tasks, ``--rate`` submits at a steady rate instead
of in rounds (a queue-side load generator), ``--task`` picks the tasks.
Tasks go straight to the broker, with the same record and publisher
confirm as the HTTP API, so ``GET /tasks/<id>`` shows them too.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, states

from worker.catalogue import CATALOGUE
from worker.celery_app import create_celery
from worker.settings import from_env_or_exit
from worker.submission import DependencyUnavailable, dependency_errors, submit

POLL_SECONDS = 0.05


def example_args(name: str, rng: random.Random) -> dict[str, Any]:
    """Plausible arguments for each catalogued task."""
    examples: dict[str, Callable[[], dict[str, Any]]] = {
        "add": lambda: {"x": rng.randint(0, 100), "y": rng.randint(0, 100)},
        "mul": lambda: {"x": rng.randint(0, 100), "y": rng.randint(0, 100)},
        "xsum": lambda: {"numbers": [rng.randint(0, 100) for _ in range(10)]},
        "dump_context": lambda: {"x": rng.randint(0, 100), "y": "hello"},
        "pi": lambda: {"digits": 100},
        "sleep": lambda: {"seconds": 1},
        "flaky": lambda: {"failures": 1},
    }
    return examples[name]()


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=0, help="stop after N tasks (default: run until stopped)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between rounds (default: 5)")
    parser.add_argument("--rate", type=float, default=0.0, help="submit this many tasks per second instead of rounds")
    parser.add_argument(
        "--task", action="append", choices=sorted(CATALOGUE), help="task to submit (repeatable; default: add and mul)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each result (default: 60)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    if args.count < 0 or args.interval < 0 or args.rate < 0 or args.timeout <= 0:
        parser.error("--count, --interval and --rate must be >= 0 and --timeout > 0")
    args.task = args.task or ["add", "mul"]
    return args


class Submitter:
    def __init__(self, app: Celery, args: argparse.Namespace, out: Callable[[str], None]) -> None:
        self.app = app
        self.args = args
        self.out = out
        self.errors = dependency_errors(app)
        self.rng = random.Random()
        self.tally = Tally()

    def say(self, text: str) -> None:
        if not self.args.quiet:
            self.out(f"[{time.strftime('%H:%M:%S')}] {text}")

    def submit_one(self, name: str) -> bool:
        spec = CATALOGUE[name]
        kwargs = example_args(name, self.rng)
        try:
            task_id = submit(self.app, spec, kwargs, self.errors)
        except DependencyUnavailable as exc:
            self.say(f"could not submit {name}: {exc}; retrying")
            return False
        label = f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
        self.tally.submitted += 1
        self.tally.pending[task_id] = Pending(label, time.monotonic())
        self.say(f"submitted {label} id={task_id}")
        return True

    def poll(self) -> None:
        """Print results that arrived; count the ones that waited too long."""
        if not self.tally.pending:
            return
        backend = self.app.backend
        ids = list(self.tally.pending)
        try:
            raws = list(backend.mget([backend.get_key_for_task(i) for i in ids]))
        except self.errors as exc:
            self.say(f"result store unavailable: {exc}")
            return
        now = time.monotonic()
        for task_id, raw in zip(ids, raws, strict=True):
            pending = self.tally.pending[task_id]
            meta = backend.decode(raw) if raw else {"status": states.PENDING}
            state = meta.get("status")
            if state in states.READY_STATES:
                del self.tally.pending[task_id]
                ok = state == states.SUCCESS
                self.tally.succeeded += ok
                self.tally.failed += not ok
                shown = meta.get("result") if ok else meta.get("result", {}).get("exc_message")
                self.say(f"{pending.label} -> {shown!r} ({state} in {now - pending.submitted:.3f} s) id={task_id}")
            elif now - pending.submitted > self.args.timeout:
                del self.tally.pending[task_id]
                self.tally.timed_out += 1
                self.say(
                    f"{pending.label} gave no result within {self.args.timeout} s (last state {state}) id={task_id}"
                )

    def run(self) -> int:
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
                    next_submit = now + max(args.interval, 1.0)
            self.poll()
            time.sleep(max(0.0, min(POLL_SECONDS, next_submit - time.monotonic())))
        while self.tally.pending:
            self.poll()
            time.sleep(POLL_SECONDS)
        elapsed = time.monotonic() - started
        t = self.tally
        self.out(
            f"submitted {t.submitted}, succeeded {t.succeeded}, failed {t.failed}, "
            f"timed out {t.timed_out} in {elapsed:.2f} s ({t.submitted / elapsed:.1f} tasks/s)"
        )
        return 0 if t.succeeded == t.submitted else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    app = create_celery(from_env_or_exit(), role="client")
    try:
        return Submitter(app, args, lambda line: print(line, flush=True)).run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
