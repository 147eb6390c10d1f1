"""Run the Locust load test headless and write a report.

    python -m loadtest.run --host http://127.0.0.1:8000 --users 20 --spawn-rate 10 --duration 30 --out report/

The report directory gets ``index.html`` (the summary, notes and plots on
one page), ``summary.json``, PNG plots of submit rate, completion rate,
latency percentiles and queue depth over time, ``events.csv`` (every
submission and completion with its time), ``queue_depth.csv`` (sampled from
RabbitMQ every second with a passive queue declare, using the same
BROKER_URL / RABBITMQ_* settings as the services), and Locust's own CSV
files and HTML page.  ``--host`` defaults to the API of a running
``./dev.sh up`` of this checkout, whose servers are used too when the
environment names none.  Before any load it checks that the API and the
broker answer, and stops within seconds, naming what it could not reach.
Exit status: 0 when every submitted task succeeded and the queue was read.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import html
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import requests

from workqueue import local_session
from workqueue.client import DependencyUnavailable, TaskClient
from workqueue.settings import Settings, SettingsError, tool_environment, tool_settings_source

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
PERCENTILES = ("50%", "95%", "99%")
PREFLIGHT_SECONDS = 10.0  # how long the API and the broker get to answer before any load


class QueueSampler(threading.Thread):
    """Samples the task queue's ready-message count once a second, timed from ``t0`` (epoch seconds)."""

    def __init__(self, client: TaskClient, path: Path, t0: float) -> None:
        super().__init__(name="queue-sampler", daemon=True)
        self.client = client
        self.path = path
        self.t0 = t0
        self.done = threading.Event()
        self.rows: list[tuple[float, int]] = []
        self.errors: list[str] = []  # distinct errors, in order

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.rows.append((round(time.time() - self.t0, 2), self.client.queue_depth()))
            except DependencyUnavailable as exc:  # keep sampling through a broker blip
                if str(exc) not in self.errors:
                    self.errors.append(str(exc))
                    print(f"queue depth unavailable: {exc}", file=sys.stderr)
            self.done.wait(1.0)
        with open(self.path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["seconds", "messages_ready"])
            writer.writerows(self.rows)


@dataclasses.dataclass(frozen=True)
class Event:
    """A submission (``POST``) or a completion (``TASK``), as the locustfile records it."""

    seconds: float  # since the run started
    kind: str
    name: str
    latency_ms: float
    ok: bool


def run_locust(args: argparse.Namespace, out: Path, env: dict[str, str]) -> int:
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(args.users), "--spawn-rate", str(args.spawn_rate), "--run-time", f"{args.duration}s",
        "--stop-timeout", "130", "--host", args.host, "--only-summary",
        "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "locust.html"),
    ]  # fmt: skip
    env = {
        **env,
        "WORKQUEUE_LOADTEST_TOTALS": str(out / "totals.json"),
        "WORKQUEUE_LOADTEST_EVENTS": str(out / "events.csv"),
    }
    return subprocess.run(argv, check=False, env=env).returncode


def read_events(path: Path, t0: float) -> list[Event]:
    """``events.csv`` (epoch seconds) with times relative to ``t0``."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [
            Event(float(row["time"]) - t0, row["type"], row["name"], float(row["response_time_ms"]), row["ok"] == "1")
            for row in csv.DictReader(handle)
        ]


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


# -- plots ------------------------------------------------------------------------------


def rate_bins(times: Iterable[float], end: float) -> tuple[list[float], list[float]]:
    """Events per second in 1 s bins from 0 to ``end``: (edges, rates).

    A last bin shorter than half a second is left out rather than drawn as a
    drop; a shorter last bin counts per second of its own length.
    """
    whole = int(end)
    edges = [float(second) for second in range(whole + 1)]
    if end - whole >= 0.5:
        edges.append(end)
    counts = [0] * (len(edges) - 1)
    for t in times:
        if 0 <= t < edges[-1]:
            counts[min(int(t), len(counts) - 1)] += 1
    return edges, [count / (edges[at + 1] - edges[at]) for at, count in enumerate(counts)]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_points(events: list[Event], fraction: float, window: float, end: float) -> tuple[list[float], list[float]]:
    """The ``fraction`` percentile of ``events``' latencies per ``window`` seconds, at each window's middle.

    Windows without an event have no point (a gap), never a made-up zero.
    """
    xs, ys = [], []
    start = 0.0
    while start < end:
        inside = [e.latency_ms for e in events if start <= e.seconds < start + window]
        if inside:
            xs.append(min(start + window / 2, end))
            ys.append(percentile(inside, fraction))
        start += window
    return xs, ys


def plot(out: Path, events: list[Event], queue: list[tuple[float, int]], end: float) -> tuple[list[Path], list[str]]:
    """Write the PNG plots; return them and notes on what could not be drawn.

    All share one time axis, from 0 (the start of the run) to ``end``, so they
    line up on the report's page.
    """
    import matplotlib  # heavy: only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accepted = [e for e in events if e.kind == "POST" and e.ok]
    refused = [e for e in events if e.kind == "POST" and not e.ok]
    completed = [e for e in events if e.kind == "TASK" and e.ok]
    failed = [e for e in events if e.kind == "TASK" and not e.ok]
    window = max(1.0, round(end / 30))  # about 30 points a line
    notes: list[str] = []
    written: list[Path] = []

    def figure(filename: str, title: str, unit: str, draw: Any, log: bool = False) -> None:
        fig, axis = plt.subplots(figsize=(9, 3.6))
        draw(axis)
        axis.set_title(title)
        axis.set_xlabel("seconds since the start of the run")
        axis.set_ylabel(unit)
        axis.set_xlim(0, end)
        if log:
            axis.set_yscale("log")
        else:
            axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3, which="both" if log else "major")
        # Outside the plotting area: a legend never covers a line.
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
        fig.savefig(out / filename, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(out / filename)

    def rates(axis: Any, series: list[tuple[str, list[Event]]]) -> None:
        for label, chosen in series:
            edges, values = rate_bins((e.seconds for e in chosen), end)
            axis.stairs(values, edges, baseline=None, label=f"{label} ({len(chosen)})", linewidth=1.6)

    if accepted or refused:
        series = [("202 accepted", accepted)] + ([("refused", refused)] if refused else [])
        figure("submit_rate.png", "Submit rate (POST /tasks), per second", "requests/s", lambda ax: rates(ax, series))
    else:
        notes.append("No submit-rate plot: no POST /tasks was answered.")
    if completed or failed:
        series = [("succeeded", completed)] + ([("failed", failed)] if failed else [])
        figure("completion_rate.png", "Completion rate, per second", "tasks/s", lambda ax: rates(ax, series))
    else:
        notes.append("No completion-rate plot: no task finished.")

    lines = [(f"enqueue p{int(q * 100)}", accepted, q) for q in (0.5, 0.95)]
    for name in sorted({e.name for e in completed}):
        lines.append((f"{name} completion p50", [e for e in completed if e.name == name], 0.5))

    def latencies(axis: Any) -> None:
        for label, chosen, fraction in lines:
            xs, ys = latency_points(chosen, fraction, window, end)
            axis.plot(xs, ys, marker="o", markersize=3, linewidth=1.4, label=label)

    if accepted:
        figure("latency.png", f"Latency percentiles per {window:g} s window", "ms (log scale)", latencies, log=True)
    else:
        notes.append("No latency plot: no submission was accepted.")

    if queue:

        def depth(axis: Any) -> None:
            axis.plot([s for s, _ in queue], [d for _, d in queue], marker="o", markersize=3, label="celery queue")

        figure("queue_depth.png", "Queue depth (messages ready, read from the broker)", "messages", depth)
    else:
        notes.append("No queue-depth plot: the broker's queue could not be read during the run.")
    return written, notes


# -- the report's page ------------------------------------------------------------------


def write_page(out: Path, summary: dict[str, Any], args: argparse.Namespace, ok: bool) -> Path:
    """``index.html``: the verdict, the summary, the notes and the plots, one self-explaining page."""

    def ms(values: dict[str, float]) -> str:
        return " / ".join(f"{values[p]:g}" for p in PERCENTILES)

    rows = [
        ("submitted (202)", summary["submitted"]),
        ("submit errors", summary["submit_errors"]),
        ("completed (SUCCESS)", summary["completed"]),
        ("failed or timed out", summary["failed"]),
        ("submit rate", f"{summary['submit_rate_per_s']} /s"),
        ("completion rate", f"{summary['completion_rate_per_s']} /s"),
        ("enqueue latency p50 / p95 / p99", f"{ms(summary['enqueue_latency_ms'])} ms"),
        ("completion latency p50 / p95 / p99", f"{ms(summary['completion_latency_ms'])} ms"),
        *(
            (f"&nbsp;&nbsp;{html.escape(name)}", f"{ms(values)} ms")
            for name, values in sorted(summary["completion_latency_ms_by_task"].items())
        ),
        ("queue depth, max (samples)", f"{summary['queue_depth_max']} ({summary['queue_samples']})"),
        ("duration", f"{summary['duration_seconds']} s"),
    ]
    table = "\n".join(
        f"<tr><th>{label if label.startswith('&nbsp;') else html.escape(label)}</th>"
        f"<td>{html.escape(str(value))}</td></tr>"
        for label, value in rows
    )
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in summary["notes"])
    plots = "\n".join(
        f'<figure><img src="{name}" alt="{name.removesuffix(".png").replace("_", " ")}"></figure>'
        for name in summary["plots"]
    )
    verdict = "Passed: every submitted task succeeded." if ok else "Failed: " + "; ".join(summary["problems"]) + "."
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>workqueue load test</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 64em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ text-align: left; padding: .25em 1em .25em 0; border-bottom: 1px solid #ddd; font-weight: normal; }}
td {{ font-variant-numeric: tabular-nums; }}
.ok {{ color: #176117; }} .failed {{ color: #a11; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }}
</style></head><body>
<h1>workqueue load test</h1>
<p>{html.escape(args.host)}: {args.users} users (spawn rate {args.spawn_rate:g}/s) for {args.duration} s,
finished {html.escape(dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))}.</p>
<p class="{"ok" if ok else "failed"}"><strong>{verdict}</strong></p>
<table>
{table}
</table>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<h2>Over time</h2>
{plots}
<p>Files: <a href="summary.json">summary.json</a>, <a href="events.csv">events.csv</a>,
<a href="queue_depth.csv">queue_depth.csv</a>, and Locust's own page <a href="locust.html">locust.html</a>
with its CSV files (<code>locust_*.csv</code>).</p>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


# -- the run ----------------------------------------------------------------------------


def preflight(client: TaskClient, host: str) -> str | None:
    """What cannot be reached (None: the API and the broker answer), tried for ``PREFLIGHT_SECONDS``."""
    deadline = time.monotonic() + PREFLIGHT_SECONDS
    problem = None
    while time.monotonic() < deadline:
        try:
            requests.get(f"{host.rstrip('/')}/healthz", timeout=2).raise_for_status()
        except requests.HTTPError as exc:
            problem = f"the API at {host} answers /healthz with {exc.response.status_code}"
        except requests.RequestException as exc:
            problem = f"the API at {host} does not answer /healthz ({type(exc).__name__})"
        else:
            try:
                client.check_broker()
                return None
            except DependencyUnavailable as exc:
                problem = f"the queue depth cannot be read: {exc} (servers from {tool_settings_source()})"
        time.sleep(1.0)
    return problem


def main(argv: list[str] | None = None) -> int:
    environment = tool_environment()  # a running ./dev.sh up's servers when the environment names none
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    session_api = environment.get(local_session.API_URL)
    parser.add_argument(
        "--host", default=session_api, help="API base URL, e.g. http://127.0.0.1:8000 (default: ./dev.sh up's)"
    )
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--duration", type=int, default=30, help="seconds of load")
    parser.add_argument("--out", type=Path, default=Path("loadtest-report"))
    parser.add_argument("--broker-url", help="where to read queue depth (default: from the environment)")
    args = parser.parse_args(argv)
    if not args.host:
        parser.error("--host is needed: no ./dev.sh up of this checkout is running to take it from")
    try:
        settings = Settings.from_env(environment)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.broker_url:
        settings = dataclasses.replace(settings, broker_url=args.broker_url)
    client = TaskClient(settings)
    try:
        problem = preflight(client, args.host)
        if problem:
            print(f"loadtest: no load was sent: {problem}", file=sys.stderr)
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        sampler = QueueSampler(client, args.out / "queue_depth.csv", t0)
        sampler.start()
        started = time.monotonic()
        code = run_locust(args, args.out, environment)
        duration = time.monotonic() - started
        sampler.done.set()
        sampler.join(10)
    finally:
        client.close()
    end = time.time() - t0
    summary = summarize(args.out, min(duration, float(args.duration)) or duration, sampler.rows)
    plots, notes = plot(args.out, read_events(args.out / "events.csv", t0), sampler.rows, end)
    if sampler.errors:
        notes.append(f"The queue depth could not be read at times: {'; '.join(sampler.errors[:3])}")
    summary["plots"] = [path.name for path in plots]
    summary["notes"] = notes
    problems = [
        *([f"Locust exited with status {code}"] if code else []),
        *([f"{summary['failed']} tasks failed or timed out"] if summary["failed"] else []),
        *(["fewer tasks completed than were submitted"] if summary["completed"] != summary["submitted"] else []),
        *(["the queue depth was never read"] if not summary["queue_samples"] else []),
    ]
    summary["problems"] = problems
    ok = not problems
    summary["report"] = write_page(args.out, summary, args, ok).name
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"report: {args.out / 'index.html'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
