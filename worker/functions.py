"""The work itself, as plain functions: no Celery, easy to unit-test.

Each Celery task in ``worker.tasks`` is a thin wrapper over one of these.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


def add(x: float, y: float) -> float:
    return x + y


def mul(x: float, y: float) -> float:
    return x * y


def xsum(numbers: Iterable[float]) -> float:
    return sum(numbers)


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


class TransientError(RuntimeError):
    """A failure worth retrying (the broker of a downstream service blipped)."""


def flaky(failures: int, attempt: int) -> str:
    """Fail with ``TransientError`` on the first ``failures`` attempts (0-based)."""
    if attempt < failures:
        raise TransientError(f"attempt {attempt + 1} failed on purpose ({failures} planned)")
    return f"succeeded on attempt {attempt + 1}"
