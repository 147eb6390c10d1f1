"""Run the Locust load test headless and write a report.

    python -m loadtest.run --host http://127.0.0.1:8000 --users 20 --spawn-rate 10 --duration 30 --out report/

The report directory gets Locust's CSV files and HTML page, ``queue_depth.csv``
(sampled from RabbitMQ every second with a passive queue declare, using the
same BROKER_URL / RABBITMQ_* settings as the services), ``summary.json`` and
PNG plots of submit rate, completion rate, latency percentiles and queue
depth over time.  Exit status: 0 when every submitted task succeeded.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from workqueue.client import DependencyUnavailable, TaskClient
from workqueue.settings import from_env_or_exit

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
PERCENTILES = ("50%", "95%", "99%")


class QueueSampler(threading.Thread):
    """Samples the task queue's ready-message count once a second."""

    def __init__(self, client: TaskClient, path: Path) -> None:
        super().__init__(name="queue-sampler", daemon=True)
        self.client = client
        self.path = path
        self.done = threading.Event()
        self.rows: list[tuple[float, int]] = []

    def run(self) -> None:
        started = time.time()
        while not self.done.is_set():
            try:
                self.rows.append((round(time.time() - started, 2), self.client.queue_depth()))
            except DependencyUnavailable as exc:  # keep sampling through a broker blip
                print(f"queue depth unavailable: {exc}", file=sys.stderr)
            self.done.wait(1.0)
        with open(self.path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["seconds", "messages_ready"])
            writer.writerows(self.rows)


def run_locust(args: argparse.Namespace, out: Path) -> int:
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(args.users), "--spawn-rate", str(args.spawn_rate), "--run-time", f"{args.duration}s",
        "--stop-timeout", "130", "--host", args.host, "--only-summary",
        "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "locust.html"),
    ]  # fmt: skip
    env = {**os.environ, "WORKQUEUE_LOADTEST_TOTALS": str(out / "totals.json")}
    return subprocess.run(argv, check=False, env=env).returncode


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def summarize(out: Path, duration: float, queue: list[tuple[float, int]]) -> dict[str, Any]:
    """Totals from ``totals.json``, written by the locustfile after every user stopped."""
    entries = {(e["type"], e["name"]): e for e in json.loads((out / "totals.json").read_text())}
    post = entries[("POST", "POST /tasks")]
    tasks = [entry for (kind, _), entry in entries.items() if kind == "TASK"]
    submitted = post["requests"] - post["failures"]
    completed = sum(entry["requests"] - entry["failures"] for entry in tasks)
    return {
        "duration_seconds": round(duration, 1),
        "submitted": submitted,
        "submit_errors": post["failures"],
        "completed": completed,
        "failed": sum(entry["failures"] for entry in tasks),
        "submit_rate_per_s": round(submitted / duration, 1),
        "completion_rate_per_s": round(completed / duration, 1),
        "enqueue_latency_ms": post["percentiles_ms"],
        "completion_latency_ms": _merge_percentiles(tasks),
        "completion_latency_ms_by_task": {entry["name"]: entry["percentiles_ms"] for entry in tasks},
        "queue_depth_max": max((depth for _, depth in queue), default=None),
        "queue_samples": len(queue),
    }


def _merge_percentiles(entries: list[dict[str, Any]]) -> dict[str, float]:
    """Request-weighted mean of each task's percentile: an approximation across task names."""
    total = sum(entry["requests"] for entry in entries) or 1
    return {
        p: round(sum(entry["percentiles_ms"][p] * entry["requests"] for entry in entries) / total, 1)
        for p in PERCENTILES
    }


def plot(out: Path, queue: list[tuple[float, int]]) -> list[Path]:
    import matplotlib  # heavy: only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = read_csv(out / "locust_stats_history.csv")
    start = min(int(row["Timestamp"]) for row in history)
    task_names = sorted({row["Name"] for row in history if row["Type"] == "TASK"})

    def series(kind: str, name: str | None, column: str) -> tuple[list[int], list[float]]:
        rows = [r for r in history if r["Type"] == kind and (name is None or r["Name"] == name)]
        by_second: dict[int, float] = {}
        for row in rows:
            value = row[column]
            if value not in ("", "N/A"):
                second = int(row["Timestamp"]) - start
                by_second[second] = by_second.get(second, 0.0) + float(value)
        seconds = sorted(by_second)
        return seconds, [by_second[s] for s in seconds]

    charts = {
        "submit_rate.png": (
            "Submit rate (POST /tasks)",
            "requests/s",
            [("202 accepted", *series("POST", "POST /tasks", "Requests/s"))],
        ),
        "completion_rate.png": ("Completion rate", "tasks/s", [("completed", *series("TASK", None, "Requests/s"))]),
        "latency.png": (
            "Latency percentiles (10 s window)",
            "ms",
            [(f"enqueue p{p[:-1]}", *series("POST", "POST /tasks", p)) for p in ("50%", "95%")]
            + [(f"{name} completion p50", *series("TASK", name, "50%")) for name in task_names],
        ),
        "queue_depth.png": (
            "Queue depth (from RabbitMQ)",
            "messages ready",
            [("celery queue", [s for s, _ in queue], [d for _, d in queue])],
        ),
    }
    written = []
    for filename, (title, unit, lines) in charts.items():
        figure, axis = plt.subplots(figsize=(8, 3.5))
        for label, xs, ys in lines:
            axis.plot(xs, ys, label=label)
        axis.set_title(title)
        axis.set_xlabel("seconds")
        axis.set_ylabel(unit)
        if filename == "latency.png":
            axis.set_yscale("symlog", linthresh=10)  # enqueue (ms) and sleep tasks (100s of ms) on one chart
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right")
        figure.tight_layout()
        figure.savefig(out / filename, dpi=100)
        plt.close(figure)
        written.append(out / filename)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="API base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--duration", type=int, default=30, help="seconds of load")
    parser.add_argument("--out", type=Path, default=Path("loadtest-report"))
    parser.add_argument("--broker-url", help="where to read queue depth (default: from the environment)")
    args = parser.parse_args(argv)
    settings = from_env_or_exit()
    if args.broker_url:
        settings = dataclasses.replace(settings, broker_url=args.broker_url)
    client = TaskClient(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    sampler = QueueSampler(client, args.out / "queue_depth.csv")
    sampler.start()
    started = time.monotonic()
    code = run_locust(args, args.out)
    duration = time.monotonic() - started
    sampler.done.set()
    sampler.join(10)
    client.close()
    summary = summarize(args.out, min(duration, float(args.duration)) or duration, sampler.rows)
    summary["plots"] = [path.name for path in plot(args.out, sampler.rows)]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    ok = code == 0 and summary["failed"] == 0 and summary["completed"] == summary["submitted"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
