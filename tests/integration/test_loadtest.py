"""A short load test (seconds) against the running API and worker: the report is complete and consistent."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from testing.faults import report
from testing.processes import REPO, Api, service_env

pytestmark = pytest.mark.integration


def test_short_load_test_writes_a_consistent_report(stack, broker_url, backend_url, tmp_path):
    """Against an API that requires a token, as the chart deploys it: the load test sends API_TOKENS' first."""
    tokens = "loadtest-token-1,loadtest-token-2"
    api = Api(broker_url, backend_url, API_TOKENS=tokens)  # the stack's worker runs the tasks
    out = tmp_path / "report"
    env = service_env(broker_url, backend_url, tmp_path / "runtime", API_TOKENS=tokens)
    try:
        api.start().wait_ready()
        result = subprocess.run(
            [sys.executable, "-m", "loadtest.run", "--host", api.url, "--users", "5", "--spawn-rate", "5",
             "--duration", "6", "--out", str(out)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        api.stop()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    plots = ["submit_rate.png", "completion_rate.png", "latency.png", "queue_depth.png"]
    expected = {"index.html", "events.csv", "locust.html", "locust_stats.csv", "locust_stats_history.csv",
                "queue_depth.csv", "summary.json", *plots}  # fmt: skip
    assert expected <= {path.name for path in out.iterdir()}
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["plots"] == plots and summary["notes"] == [] and summary["problems"] == []
    page = (out / "index.html").read_text()
    assert "Passed: every submitted task succeeded." in page
    assert all(f'<img src="{name}"' in page for name in plots)
    assert f"<tr><th>submitted (202)</th><td>{summary['submitted']}</td></tr>" in page
    with open(out / "events.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # Every submission and completion is recorded, the source of the plots.
    assert sum(row["type"] == "POST" and row["ok"] == "1" for row in rows) == summary["submitted"]
    assert sum(row["type"] == "TASK" and row["ok"] == "1" for row in rows) == summary["completed"]
    report(f"[load test] {json.dumps({k: summary[k] for k in ('submitted', 'completed', 'submit_rate_per_s')})}")
    assert summary["submitted"] > 0
    assert summary["completed"] == summary["submitted"], "every submitted task completed"
    assert summary["failed"] == 0 and summary["submit_errors"] == 0
    assert summary["submit_rate_per_s"] > 0 and summary["completion_rate_per_s"] > 0
    for latencies in (summary["enqueue_latency_ms"], summary["completion_latency_ms"]):
        assert 0 < latencies["50%"] <= latencies["95%"] <= latencies["99%"]
    assert summary["completion_latency_ms"]["50%"] >= summary["enqueue_latency_ms"]["50%"]
    assert summary["queue_samples"] >= 3 and summary["queue_depth_max"] is not None
    assert set(summary["completion_latency_ms_by_task"]) <= {"add", "xsum", "pi", "sleep"}
