"""Batch mode: the exact command a Job or a CronJob runs (`run.sh submit ...`) against a real worker."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
import requests

from testing.processes import REPO, service_env
from testing.servers import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def submit(stack, broker_url, backend_url, tmp_path):
    """Runs `run.sh submit ARGS` as a container would; returns the finished process."""
    env = service_env(broker_url, backend_url, tmp_path / "runtime")

    def run(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(REPO / "run.sh"), "submit", *args], env=env, cwd=REPO, input=stdin,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    run.env = env  # type: ignore[attr-defined]
    return run


def test_copies_of_a_task_succeed_with_a_progress_line_each(submit):
    result = submit("--batch", "--task", "add", "--args", "[2, 3]", "--count", "5", "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    progress = re.findall(r"^\[(\d)/5\] \S+ add\(x=2, y=3\) -> SUCCESS 5$", result.stdout, re.M)
    assert sorted(progress) == ["1", "2", "3", "4", "5"]
    assert "batch: 5 tasks, 5 submitted, 5 succeeded, 0 failed, 0 still pending" in result.stdout


def test_a_failing_task_in_a_jsonl_batch_makes_it_exit_non_zero(submit):
    lines = [
        {"task": "add", "args": [1, 2]},
        {"task": "flaky", "args": [10]},  # fails after 3 retries (1 + 2 + 4 s)
        {"task": "mul", "kwargs": {"x": 3, "y": 4}},
    ]
    result = submit("--from", "-", "--timeout", "60", stdin="\n".join(json.dumps(line) for line in lines) + "\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "batch: 3 tasks, 3 submitted, 2 succeeded, 1 failed, 0 still pending" in result.stdout
    assert re.search(r"flaky\(failures=10\) -> FAILURE .*TransientError", result.stdout)


def test_bad_input_submits_nothing(submit, tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"task": "add", "args": [1, 2]}\n{"task": "add", "args": ["one", 2]}\n')
    result = submit("--from", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == "submit_tasks: line 2: add: argument 'x': 'one' is not of type 'number'"
    assert "submitted" not in result.stdout


def test_sigterm_stops_waiting_and_loses_no_task(submit, stack):
    api, _ = stack
    process = subprocess.Popen(
        [str(REPO / "run.sh"), "submit", "--batch", "--task", "sleep", "--args", "[2]", "--count", "4"],
        env=submit.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines: list[str] = []
        while len(lines) < 4:
            line = process.stdout.readline()  # type: ignore[union-attr]
            assert line, "the batch ended before submitting"
            if line.startswith("submitted "):
                lines.append(line.split()[1])
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143
    pending = re.search(r"^still pending \(queued, they will run\): (.+)$", output, re.M)
    assert pending and set(pending.group(1).split()) <= set(lines)

    def all_done() -> bool:
        return all(requests.get(f"{api.url}/tasks/{i}", timeout=5).json()["state"] == "SUCCESS" for i in lines)

    wait_until(all_done, 60, "the batch's tasks to finish after the batch process stopped", interval=0.5)


def test_a_schedule_run_twice_for_one_slot_submits_once(submit):
    key = f"schedule:nightly:job-{time.time_ns()}"
    first = submit("--task", "add", "--args", "[1, 1]", "--no-wait", "--idempotency-key", key)
    second = submit("--task", "add", "--args", "[1, 1]", "--no-wait", "--idempotency-key", key)
    assert first.returncode == 0 and second.returncode == 0, first.stdout + second.stdout
    first_id = re.search(r"^submitted (\S+) add", first.stdout, re.M).group(1)  # type: ignore[union-attr]
    second_id = re.search(r"^submitted (\S+) add", second.stdout, re.M).group(1)  # type: ignore[union-attr]
    assert first_id == second_id
    assert "already submitted under its idempotency key" in second.stdout
