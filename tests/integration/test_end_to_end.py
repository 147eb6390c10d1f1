"""End to end: ``run.sh api`` + ``run.sh worker`` as real processes, over HTTP.

Every task type is submitted through the API and its result checked; the
book's ``submit_tasks.py`` runs against the same worker.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from celery import states

from testing.processes import REPO, service_env, wait_for_state
from workqueue.tasks import pi_digits

pytestmark = pytest.mark.integration

CASES = [
    ("add", {"args": [2, 3]}, 5),
    ("mul", {"args": [4, 2.5]}, 10.0),
    ("xsum", {"args": [[1, 2, 3.5]]}, 6.5),
    ("pi", {"kwargs": {"digits": 1000}}, pi_digits(1000)),
    ("sleep", {"args": [0.5]}, None),
    ("flaky", {"args": [1]}, "succeeded on attempt 2"),
    ("dump_context", {"args": [7, "ü🙂 \u202e junk"]}, None),
]


def submit(api_url: str, task: str, **body) -> str:
    response = requests.post(f"{api_url}/tasks", json={"task": task, **body}, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_every_task_type_runs_over_http(api_url):
    ids = {task: submit(api_url, task, **body) for task, body, _ in CASES}
    for task, _body, expected in CASES:
        view = wait_for_state(api_url, ids[task], states.READY_STATES, timeout=60)
        assert view["state"] == states.SUCCESS, view
        assert view["task"] == task
        assert view["completed_at"] >= view["submitted_at"]
        if expected is not None:
            assert view["result"] == expected
    sleep_view = wait_for_state(api_url, ids["sleep"], {states.SUCCESS})
    assert sleep_view["result"]["slept"] >= 0.5
    flaky_view = wait_for_state(api_url, ids["flaky"], {states.SUCCESS})
    assert flaky_view["retries"] == 1
    context = wait_for_state(api_url, ids["dump_context"], {states.SUCCESS})["result"]
    assert context["id"] == ids["dump_context"]
    assert context["kwargs"] == {"x": 7, "y": "ü🙂 \u202e junk"}  # unicode survives the round trip
    assert context["routing_key"] == "celery"


def test_sleep_reports_progress(api_url):
    task_id = submit(api_url, "sleep", args=[3])
    view = wait_for_state(api_url, task_id, {"PROGRESS"}, timeout=30)
    assert view["progress"]["total"] == 3
    assert 0 <= view["progress"]["elapsed"] < 3


def test_retries_exhausted_end_in_failure_with_the_error(api_url):
    task_id = submit(api_url, "flaky", kwargs={"failures": 10})
    view = wait_for_state(api_url, task_id, states.READY_STATES, timeout=60)
    assert view["state"] == states.FAILURE
    assert view["retries"] == 3
    assert view["error"] == {"type": "TransientError", "message": "attempt 4 failed on purpose (10 planned)"}
    deleted = requests.delete(f"{api_url}/tasks/{task_id}", timeout=10)
    assert deleted.status_code == 409


def test_revoked_task_never_runs(api_url):
    # Occupy both pool processes (and their one-message prefetch) so the
    # next task waits in the queue, then revoke it.
    blockers = [submit(api_url, "sleep", args=[2]) for _ in range(4)]
    victim = submit(api_url, "add", args=[1, 1])
    response = requests.delete(f"{api_url}/tasks/{victim}", timeout=10)
    assert response.status_code == 202
    assert response.json()["revoke_requested"] is True
    assert wait_for_state(api_url, victim, states.READY_STATES, timeout=60)["state"] == states.REVOKED
    for blocker in blockers:
        assert wait_for_state(api_url, blocker, states.READY_STATES, timeout=60)["state"] == states.SUCCESS


def test_submit_tasks_script_prints_results(stack, broker_url, backend_url, tmp_path):
    env = service_env(broker_url, backend_url, tmp_path)
    result = subprocess.run(
        [sys.executable, "submit_tasks.py", "--count", "6", "--interval", "0.2", "--timeout", "60"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert sum("add(x=" in line and "(SUCCESS in" in line for line in lines) == 3
    assert sum("mul(x=" in line and "(SUCCESS in" in line for line in lines) == 3
    assert lines[-1].startswith("submitted 6, succeeded 6, failed 0, timed out 0")


def test_submit_tasks_console_script_with_rate_and_task(stack, broker_url, backend_url, tmp_path):
    env = service_env(broker_url, backend_url, tmp_path)
    script = f"{sys.prefix}/bin/submit-tasks"
    result = subprocess.run(
        [script, "--count", "20", "--rate", "50", "--task", "xsum", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("submitted 20, succeeded 20, failed 0, timed out 0")
