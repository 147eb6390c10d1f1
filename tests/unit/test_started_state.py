"""The deferred STARTED write (workqueue/started_state.py): when it is made, and when it never is."""

from __future__ import annotations

import threading
import time

from workqueue.started_state import DeferredStarted


class Writes:
    """A write that records each call; it fails with ``errors`` first, one per call."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.done = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.done.set()


def retry_connection_errors(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


def test_started_is_written_once_the_task_has_run_for_the_delay():
    deferred, write = DeferredStarted(0.05, retry_connection_errors), Writes()
    began = time.monotonic()
    deferred.defer("a", write)
    assert write.done.wait(10)
    assert time.monotonic() - began >= 0.05
    assert deferred.settle("a") is True  # a later state knows STARTED was stored
    time.sleep(0.1)
    assert write.calls == 1


def test_a_task_that_ends_first_never_writes_started():
    deferred, write = DeferredStarted(0.2, retry_connection_errors), Writes()
    deferred.defer("a", write)
    assert deferred.settle("a") is False
    time.sleep(0.4)  # twice the delay
    assert write.calls == 0


def test_settling_another_task_leaves_the_pending_write():
    deferred, write = DeferredStarted(0.05, retry_connection_errors), Writes()
    deferred.defer("b", write)
    assert deferred.settle("a") is False
    assert write.done.wait(10)


def test_a_store_that_refuses_is_retried_until_it_accepts():
    refusals = [ConnectionError("down"), ConnectionError("down")]
    deferred, write = DeferredStarted(0.01, retry_connection_errors), Writes(*refusals)
    deferred.defer("a", write)
    assert write.done.wait(10)
    assert write.calls == 3


def test_an_error_that_is_no_outage_drops_the_write(caplog):
    deferred, write = DeferredStarted(0.01, retry_connection_errors), Writes(ValueError("bad"))
    deferred.defer("a", write)
    deadline = time.monotonic() + 10
    while "STARTED not stored" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert write.calls == 1 and "task a: STARTED not stored (bad)" in caplog.text
    assert deferred.settle("a") is False
