"""Worker probes: ``celery_status.sh --live/--ready/--deep`` against a real worker.

Liveness follows the worker's own event loop and ignores the broker;
readiness follows this worker's broker connection.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from testing.faults import report
from testing.processes import REPO, Worker
from testing.servers import wait_until
from worker.probes import HEARTBEAT_FILE, READY_FILE, ProbeFiles

MAX_AGE = 3  # seconds; the worker heartbeats every 0.5 s in these tests


def probe(runtime_dir: Path, mode: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": os.environ["PATH"],
        "RUNTIME_DIR": str(runtime_dir),
        "WORKER_HEARTBEAT_MAX_AGE": str(MAX_AGE),
        **env,
    }
    return subprocess.run(
        [str(REPO / "celery_status.sh"), mode], env=environment, capture_output=True, text=True, timeout=60
    )


def passes(runtime_dir: Path, mode: str) -> bool:
    result = probe(runtime_dir, mode)
    if result.returncode == 0:
        assert result.stdout == result.stderr == "", "a passing probe is silent"
        return True
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 1, "a failing probe prints one line"
    return False


def stays(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(0.25)
    return True


# --- the probe script on hand-made files ------------------------------------------


def test_probe_without_files_fails_with_one_line(tmp_path):
    result = probe(tmp_path, "--live")
    assert result.returncode == 1
    assert result.stdout == f"celery_status: no heartbeat file in {tmp_path} (worker not started?)\n"
    assert probe(tmp_path, "--ready").returncode == 1


def test_probe_judges_heartbeat_age_and_ready_marker(tmp_path):
    (tmp_path / HEARTBEAT_FILE).write_text(f"{int(time.time())}\n")
    assert passes(tmp_path, "--live")
    assert not passes(tmp_path, "--ready")  # fresh heartbeat, but not connected
    (tmp_path / READY_FILE).write_text("1\n")
    assert passes(tmp_path, "--ready")
    (tmp_path / HEARTBEAT_FILE).write_text(f"{int(time.time()) - MAX_AGE - 5}\n")
    assert "worker hung or stopped" in probe(tmp_path, "--live").stdout
    assert not passes(tmp_path, "--ready")  # a dead worker's ready file is not trusted
    (tmp_path / HEARTBEAT_FILE).write_text("garbage\n")
    assert probe(tmp_path, "--live").stdout == "celery_status: heartbeat file is malformed\n"
    assert probe(tmp_path, "--bogus").returncode == 2


def test_heartbeat_stops_when_the_connected_event_loop_stalls(tmp_path):
    files = ProbeFiles(str(tmp_path), interval=0.1)
    files.set_ready(True)
    files.last_tick = time.monotonic() - files.stall_limit - 1  # the loop stopped turning
    files.beat()
    assert not (tmp_path / HEARTBEAT_FILE).exists()
    files.tick()
    files.beat()
    assert (tmp_path / HEARTBEAT_FILE).exists()
    # Between connections Celery's reconnect loop runs instead of the event
    # loop: no ticks, but the worker is not hung.
    files.set_ready(False)
    files.last_tick = time.monotonic() - files.stall_limit - 1
    assert files.healthy()


# --- against a real worker and a private broker ------------------------------------


@pytest.mark.integration
def test_probes_follow_a_real_worker(private_rabbitmq, backend_url):
    worker = Worker(private_rabbitmq.url, backend_url, name="probed")
    runtime = worker.runtime_dir
    assert not passes(runtime, "--live") and not passes(runtime, "--ready")  # not started

    # Starting while the broker is down: alive (retrying), not ready.
    private_rabbitmq.stop()
    worker.start()
    wait_until(lambda: passes(runtime, "--live"), 60, "--live while the broker is down")
    assert stays(lambda: passes(runtime, "--live") and not passes(runtime, "--ready"), MAX_AGE + 2)
    private_rabbitmq.start()
    wait_until(lambda: passes(runtime, "--ready"), 90, "--ready once the broker is up")

    # SIGSTOP: hung. Liveness fails within the staleness bound, then recovers.
    assert worker.process is not None
    stopped_at = time.monotonic()
    worker.process.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: not passes(runtime, "--live"), MAX_AGE + 5, "--live to fail on a stopped worker")
        report(
            f"[probe figures] SIGSTOP: --live failed after {time.monotonic() - stopped_at:.1f} s (max age {MAX_AGE} s)"
        )
        assert not passes(runtime, "--ready")
    finally:
        worker.process.signal(signal.SIGCONT)
    wait_until(lambda: passes(runtime, "--live") and passes(runtime, "--ready"), 30, "recovery after SIGCONT")

    # Broker outage: not ready, but alive all along; ready again without a restart.
    pid = worker.process.pid
    private_rabbitmq.stop()
    wait_until(lambda: not passes(runtime, "--ready"), 30, "--ready to fail with the broker down")
    assert stays(lambda: passes(runtime, "--live"), MAX_AGE + 3), "liveness must not depend on the broker"
    private_rabbitmq.start()
    started = time.monotonic()
    wait_until(lambda: passes(runtime, "--ready"), 90, "--ready after the broker returned")
    report(f"[probe figures] broker back: --ready passed again after {time.monotonic() - started:.1f} s")
    assert worker.process.pid == pid and worker.process.alive()

    # --deep pings only this worker over the broker.
    deep_env = {**worker.env, "WORKER_NODENAME": worker.nodename}
    deep = subprocess.run(
        [str(REPO / "celery_status.sh"), "--deep"], env=deep_env, capture_output=True, text=True, timeout=60
    )
    assert deep.returncode == 0, deep.stdout
    other = subprocess.run(
        [str(REPO / "celery_status.sh"), "--deep"],
        env={**deep_env, "WORKER_NODENAME": "celery@nowhere", "PROBE_TIMEOUT": "1"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert other.returncode == 1
    assert other.stdout.startswith("celery_status: celery@nowhere did not answer a ping")
    assert len(other.stdout.splitlines()) == 1

    assert worker.stop() == 0
    assert not passes(runtime, "--live"), "a stopped worker removes its heartbeat"
