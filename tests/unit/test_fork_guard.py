"""A fork of the worker's main process waits for its threads' network I/O (``worker.fork_safety.ForkGuard``).

A fork copies OpenSSL's locks as they are at that instant: a pool process
forked while the presence thread was inside a TLS connect inherited a held
lock and hung on its own first connect.  ``bench/fork_tls.py`` measures the
hang with real handshakes (about 1 child in 100 without the guard, none
with it); here the guard's contract is made certain: a fork waits for a
thread inside ``io()``, a thread waits for a fork under way, the child
starts with a fresh guard, and the worker's threads do their I/O inside it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import pytest

from worker import fork_safety
from worker.metrics import QueueDepthCollector, ResultStoreMemoryCollector
from worker.presence import PresenceStep
from workqueue.settings import Settings

FORK_WHILE_A_THREAD_IS_INSIDE = textwrap.dedent(
    """
    import os, sys, threading, time
    from worker import fork_safety

    guard = fork_safety.guard() if sys.argv[1] == "registered" else fork_safety.ForkGuard()
    inside, left = threading.Event(), []

    def connect():
        with guard.io():
            inside.set()
            time.sleep(0.5)
            left.append(time.monotonic())

    thread = threading.Thread(target=connect)
    thread.start()
    inside.wait(10)
    pid = os.fork()
    if pid == 0:  # the "pool process": none of the parent's threads is inside here
        fresh = guard.inside == 0
        with guard.io():  # would wait for ever on a copied fork in progress
            pass
        os._exit(0 if fresh else 3)
    forked_at = time.monotonic()
    thread.join()
    _, status = os.waitpid(pid, 0)
    print("waited" if forked_at >= left[0] else "did not wait", os.waitstatus_to_exitcode(status))
    """
)


def fork_while_a_thread_is_inside(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", FORK_WHILE_A_THREAD_IS_INSIDE, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_fork_waits_for_the_thread_inside_and_the_child_starts_fresh():
    assert fork_while_a_thread_is_inside("registered") == "waited 0"


def test_without_the_fork_hooks_the_fork_does_not_wait_and_the_child_inherits_the_count():
    """Negative control: the same script with a guard not registered for forks."""
    assert fork_while_a_thread_is_inside("unregistered") == "did not wait 3"


def enters(guard: fork_safety.ForkGuard) -> tuple[threading.Event, threading.Event]:
    """A thread that enters ``guard.io()`` and stays until released."""
    entered, release = threading.Event(), threading.Event()

    def run() -> None:
        with guard.io():
            entered.set()
            release.wait(30)

    threading.Thread(target=run, daemon=True).start()
    return entered, release


def test_a_thread_waits_while_a_fork_is_under_way():
    guard = fork_safety.ForkGuard()
    guard.before_fork()  # nobody inside: returns at once
    entered, release = enters(guard)
    try:
        assert not entered.wait(0.3), "a thread entered while the fork was under way"
        guard.after_fork_in_parent()
        assert entered.wait(10)
    finally:
        release.set()


def test_a_fork_goes_ahead_after_the_wait_limit_and_says_so(caplog):
    guard = fork_safety.ForkGuard(wait_limit=0.2)
    entered, release = enters(guard)
    try:
        assert entered.wait(10)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger=fork_safety.__name__):
            guard.before_fork()
        assert time.monotonic() - started >= 0.2
        assert "1 thread(s) still wait on the network" in caplog.text
        guard.after_fork_in_parent()
    finally:
        release.set()


class InsideRecorder:
    """Stands in for the server at the other end: records whether the caller is inside the guard."""

    def __init__(self, guard: fork_safety.ForkGuard) -> None:
        self.guard = guard
        self.seen: list[int] = []

    def record(self, *_: object, **__: object) -> dict[str, int]:
        self.seen.append(self.guard.inside)
        return {"used_memory": 1, "maxmemory": 0}


def test_the_presence_thread_beats_inside_the_guard():
    worker = SimpleNamespace(
        app=SimpleNamespace(workqueue_settings=Settings.from_env({})),
        hostname="w@h", pool_cls=SimpleNamespace(__module__="celery.concurrency.prefork"), concurrency=1,
    )  # fmt: skip
    step = PresenceStep(worker)
    recorder = InsideRecorder(step.guard)

    def beat(*args: object) -> None:
        recorder.record()
        step._stop.set()  # one beat, then the loop ends

    step._presence = SimpleNamespace(beat=beat)  # type: ignore[assignment]
    step._run(worker)
    assert recorder.seen == [1]
    assert step.guard is fork_safety.guard()  # the registered one


def test_a_scrape_reads_redis_inside_the_guard():
    guard = fork_safety.ForkGuard()
    recorder = InsideRecorder(guard)
    app = SimpleNamespace(backend=SimpleNamespace(client=SimpleNamespace(info=recorder.record)))
    list(ResultStoreMemoryCollector(app, guard).collect())  # type: ignore[arg-type]
    assert recorder.seen == [1]


def test_a_scrape_connects_to_the_broker_inside_the_guard():
    guard = fork_safety.ForkGuard()
    recorder = InsideRecorder(guard)

    class Connection:
        def __enter__(self) -> Connection:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def ensure_connection(self, **_: object) -> None:
            recorder.record()
            raise ConnectionRefusedError  # the scrape goes on without the figure

    app = SimpleNamespace(connection_for_read=Connection)
    families = list(QueueDepthCollector(app, ["celery"], guard).collect())  # type: ignore[arg-type]
    assert recorder.seen == [1]
    assert [f.name for f in families] == ["celery_queue_length", "celery_active_consumer_count"]


@pytest.mark.parametrize("holders", [1, 2])
def test_the_count_returns_to_zero_when_threads_leave(holders):
    guard = fork_safety.ForkGuard()
    pairs = [enters(guard) for _ in range(holders)]
    for entered, _ in pairs:
        assert entered.wait(10)
    assert guard.inside == holders
    for _, release in pairs:
        release.set()
    deadline = time.monotonic() + 10
    while guard.inside and time.monotonic() < deadline:
        time.sleep(0.01)
    assert guard.inside == 0
