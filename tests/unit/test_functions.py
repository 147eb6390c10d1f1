"""The task functions, called directly (no Celery involved)."""

import pytest

from workqueue import tasks as functions
from workqueue.catalogue import TaskContext

# The first 60 decimals of pi, for checking pi_digits independently.
PI_60 = "3.141592653589793238462643383279502884197169399375105820974944"


def test_add_mul_xsum():
    assert functions.add(2, 3) == 5
    assert functions.mul(4, 2.5) == 10.0
    assert functions.xsum([1, 2, 3.5]) == 6.5
    assert functions.xsum([]) == 0


@pytest.mark.parametrize("digits", [0, 1, 5, 30, 60])
def test_pi_digits_matches_known_decimals(digits):
    expected = PI_60[: 2 + digits] if digits else "3"
    assert functions.pi_digits(digits) == expected


def test_pi_digits_beyond_pythons_int_to_str_limit():
    text = functions.pi_digits(10_000)
    assert len(text) == 10_002
    assert text.startswith(PI_60)
    assert text.endswith("375678")  # decimals 9,995-10,000 of pi


def test_pi_digits_rejects_negative():
    with pytest.raises(ValueError, match="digits"):
        functions.pi_digits(-1)


def test_sleep_reports_progress_until_done():
    now = [0.0]
    reports = []
    slept = functions.sleep_with_progress(
        2.0,
        lambda elapsed, total: reports.append((elapsed, total)),
        step=0.5,
        clock=lambda: now[0],
        pause=lambda seconds: now.__setitem__(0, now[0] + seconds),
    )
    assert slept == 2.0
    assert reports == [(0.0, 2.0), (0.5, 2.0), (1.0, 2.0), (1.5, 2.0)]


def context(retries: int = 0, progress: list | None = None) -> TaskContext:
    return TaskContext(
        id="an-id", retries=retries, hostname="celery@here", args=(), kwargs={}, routing_key="celery",
        redelivered=False, report_progress=lambda **meta: (progress if progress is not None else []).append(meta),
    )  # fmt: skip


def test_flaky_fails_the_planned_attempts_then_succeeds():
    for attempt in range(2):
        with pytest.raises(functions.TransientError):
            functions.flaky(context(retries=attempt), 2)
    assert functions.flaky(context(retries=2), 2) == "succeeded on attempt 3"


def test_sleep_task_reports_progress_through_its_context():
    progress: list = []
    assert functions.sleep(context(progress=progress), 0.6) == {"slept": pytest.approx(0.6, abs=0.2)}
    assert progress and progress[0] == {"elapsed": 0.0, "total": 0.6}
