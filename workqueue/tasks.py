"""The tasks: plain typed functions, one ``@task`` each.

This is the one place to add a task (docs/tasks.md, "Add your own task"): the
function's name is the task's name, its docstring's first line the summary,
its type hints (with pydantic ``Field`` constraints) the argument schema that
validation, ``GET /catalogue`` and ``/openapi.json`` use, and the worker runs
it as a Celery task.  Nothing here imports Celery, so each function can be
called and tested directly.  Tasks in other modules join the catalogue when
those modules are listed in ``TASK_MODULES``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema

from workqueue.catalogue import TaskContext, task

logger = logging.getLogger(__name__)

# Numbers are bounded to what every JSON client can represent exactly
# (2**53), so results never overflow to Infinity, which JSON cannot carry.
SafeNumber = Annotated[float, Field(ge=-(2**53), le=2**53)]
# dump_context echoes what it is given: any short string or safe number
# (one JSON Schema type list, so a bad value gets one clear message).
SCALAR_SCHEMA = {"type": ["number", "string"], "maxLength": 1000, "minimum": -(2**53), "maximum": 2**53}
Scalar = Annotated[float | str, WithJsonSchema(SCALAR_SCHEMA)]
MAX_PI_DIGITS = 50_000
MAX_SLEEP_SECONDS = 300
MAX_XSUM_ITEMS = 10_000
MAX_FLAKY_FAILURES = 10


class TransientError(RuntimeError):
    """A failure worth retrying (the broker of a downstream service blipped)."""


@task
def add(x: SafeNumber, y: SafeNumber) -> float:
    """Return x + y."""
    return x + y


@task
def mul(x: SafeNumber, y: SafeNumber) -> float:
    """Return x * y."""
    return x * y


@task
def xsum(numbers: Annotated[list[SafeNumber], Field(max_length=MAX_XSUM_ITEMS)]) -> float:
    """Return the sum of a list of numbers."""
    return sum(numbers)


@task
def dump_context(context: TaskContext, x: Scalar, y: Scalar) -> dict[str, Any]:
    """Log and return the task's execution context (id, args, delivery info)."""
    # The book's task: show what the worker knows about this execution.
    logger.info("Executing task id %s, args: %r kwargs: %r", context.id, context.args, context.kwargs)
    return {
        "id": context.id,
        "args": list(context.args),
        "kwargs": context.kwargs,
        "hostname": context.hostname,
        "pid": os.getpid(),
        "retries": context.retries,
        "routing_key": context.routing_key,
        "redelivered": context.redelivered,
    }


@task
def pi(digits: Annotated[int, Field(ge=0, le=MAX_PI_DIGITS)]) -> str:
    """Compute pi to the given number of decimal places (CPU-bound)."""
    return pi_digits(digits)


@task
def sleep(context: TaskContext, seconds: Annotated[float, Field(ge=0, le=MAX_SLEEP_SECONDS)]) -> dict[str, float]:
    """Sleep the given seconds, reporting progress as state PROGRESS."""

    def report(elapsed: float, total: float) -> None:
        context.report_progress(elapsed=elapsed, total=total)

    return {"slept": sleep_with_progress(seconds, report)}


@task(
    autoretry_for=(TransientError,),
    max_retries=3,
    retry_backoff=1,  # 1 s, 2 s, 4 s ...
    retry_backoff_max=60,
    # No jitter: Celery's full jitter can draw a 0 s countdown, and then the
    # next attempt may finish before this one has stored its RETRY state,
    # which then overwrites the final SUCCESS/FAILURE (seen in CI).
    retry_jitter=False,
)
def flaky(context: TaskContext, failures: Annotated[int, Field(ge=0, le=MAX_FLAKY_FAILURES)]) -> str:
    """Fail the first `failures` attempts, retrying with exponential backoff."""
    attempt = context.retries
    if attempt < failures:
        raise TransientError(f"attempt {attempt + 1} failed on purpose ({failures} planned)")
    return f"succeeded on attempt {attempt + 1}"


def pi_digits(digits: int) -> str:
    """Pi to ``digits`` decimal places, as the book's Job computed with bc.

    Machin's formula in integer fixed-point arithmetic: pure CPU work whose
    cost grows roughly quadratically with ``digits``.
    """
    if digits < 0:
        raise ValueError("digits must be >= 0")
    guard = 10  # extra digits absorb truncation error in the series
    unity = 10 ** (digits + guard)
    value = 4 * (4 * _arccot(5, unity) - _arccot(239, unity))
    text = _decimal(value // 10**guard)
    return text[0] if digits == 0 else f"{text[0]}.{text[1:]}"


def _decimal(number: int, chunk: int = 1000) -> str:
    """str(number) for any size: Python refuses more than 4300 digits at once."""
    parts = []
    while number >= 10**chunk:
        number, low = divmod(number, 10**chunk)
        parts.append(f"{low:0{chunk}d}")
    parts.append(str(number))
    return "".join(reversed(parts))


def _arccot(x: int, unity: int) -> int:
    """arccot(x) * unity by its Taylor series, in integers."""
    total = term = unity // x
    x_squared = x * x
    n = 3
    sign = -1
    while term:
        term //= x_squared
        total += sign * (term // n)
        sign = -sign
        n += 2
    return total


def sleep_with_progress(
    seconds: float,
    report: Callable[[float, float], None],
    step: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> float:
    """Sleep ``seconds``, calling ``report(elapsed, total)`` about every ``step``.

    Returns the seconds actually slept.
    """
    start = clock()
    deadline = start + seconds
    while (now := clock()) < deadline:
        report(round(now - start, 3), seconds)
        pause(min(step, deadline - now))
    return round(clock() - start, 3)
