"""POST /tasks throughput vs a no-op endpoint, for each serving model of the API.

Both are driven by wrk (C, so the load generator is not the bottleneck)
against ``run.sh api`` with its production settings (publisher confirms,
submission record in Redis, a bearer token required as the chart deploys
it).  The no-op baseline is ``GET /healthz``: same server, same Flask
middleware, no broker or Redis.  One API per serving model
(``API_WORKER_CLASS``: gevent, the default, and gthread, the earlier one) runs
side by side, and rounds alternate models and endpoints so machine noise hits
all alike; the ratios of medians are the figures.  Besides the rates, the
CPU time the API's processes used per request (read from /proc) is reported:
on a shared machine it moves less than a rate does.  Goal: POST >= 0.5 of the
no-op rate.

``--flower``: the peer a user would otherwise run to submit over HTTP,
Flower's ``POST /api/task/async-apply/<task>`` (Tornado, one process, no
publisher confirms, no record, no auth), against one gevent API process of
ours (confirms, record, index and a token) on the same broker, in
alternating rounds.  Goal (issue 25): ours >= 2 x Flower.

    .venv/bin/python -m bench.submit_throughput [--seconds 8] [--rounds 3] [--models gevent,gthread] [--flower]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.common import REPO, TOKEN, Api, cpu_seconds, ensure_apt, median, private_servers, secured_api
from testing.processes import service_env
from testing.servers import Process, free_port, new_server_dir, wait_until

POST_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{{"task": "add", "args": [2, 3]}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {TOKEN}"
"""


FLOWER_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"kwargs": {"x": 2, "y": 3}}'
wrk.headers["Content-Type"] = "application/json"
"""


def run_wrk(wrk: str, url: str, seconds: int, connections: int, script: Path | None) -> tuple[float, float, int]:
    """(requests/s, p50 ms, requests) of one wrk run."""
    argv = [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        argv[1:1] = ["-s", str(script)]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{output}")
    return rate, float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan"), total


@dataclass
class Endpoint:
    """Rounds of one endpoint on one API."""

    rates: list[float] = field(default_factory=list)
    p50s: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # API CPU per request

    def add(self, api: Api, measure: tuple[str, str, int, int, Path | None]) -> None:
        assert api.process is not None
        self.add_pid(api.process.pid, measure)

    def add_pid(self, pid: int, measure: tuple[str, str, int, int, Path | None]) -> None:
        before = cpu_seconds(pid)
        rate, p50, total = run_wrk(*measure)
        self.rates.append(rate)
        self.p50s.append(p50)
        self.cpu_ms.append(1000 * (cpu_seconds(pid) - before) / total)

    def line(self, label: str) -> str:
        rounds = [round(r) for r in self.rates]
        return (
            f"{label:<26}: {median(self.rates):6.0f} req/s  p50 {median(self.p50s):5.2f} ms  "
            f"CPU {median(self.cpu_ms):.2f} ms/req  rounds {rounds}"
        )


def flower_peer(args: argparse.Namespace, wrk: str) -> None:
    """Ours (one gevent process) against Flower's async-apply, rounds alternating."""
    ours, flower = Endpoint(), Endpoint()
    with private_servers() as (broker_url, backend_url), tempfile.TemporaryDirectory() as scratch:
        post, peer = Path(scratch) / "post.lua", Path(scratch) / "flower.lua"
        post.write_text(POST_SCRIPT)
        peer.write_text(FLOWER_SCRIPT)
        api = secured_api(broker_url, backend_url, API_WORKERS="1", API_WORKER_CLASS="gevent")
        port = free_port()
        env = service_env(
            broker_url, backend_url, new_server_dir("flower") / "runtime", FLOWER_UNAUTHENTICATED_API="true"
        )
        argv = [sys.executable, "-m", "celery", "-A", "worker.main", "flower", f"--port={port}", "--address=127.0.0.1"]
        process = Process(argv, env, new_server_dir("flower") / "flower.log", cwd=str(REPO))
        try:
            api.start().wait_ready()
            wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthcheck"), 60, "Flower")
            for _ in range(args.rounds):
                ours.add(api, (wrk, f"{api.url}/tasks", args.seconds, args.connections, post))
                flower.add_pid(process.pid, (wrk, f"http://127.0.0.1:{port}/api/task/async-apply/workqueue.add",
                                             args.seconds, args.connections, peer))  # fmt: skip
        finally:
            api.stop()
            process.stop()
    print(ours.line("ours: POST /tasks, 1 proc"))
    print(flower.line("Flower: async-apply, 1 proc"))
    ratio = median(ours.rates) / median(flower.rates)
    print(f"goal: POST >= 2.00 x Flower's async-apply: {ratio:.2f} ({'met' if ratio >= 2 else 'NOT met'})")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", default="2", help="API_WORKERS (gunicorn processes)")
    parser.add_argument("--threads", default="4", help="API_THREADS per process (gthread)")
    parser.add_argument("--models", default="gevent,gthread", help="API_WORKER_CLASS values, side by side")
    parser.add_argument("--flower", action="store_true", help="against Flower's async-apply instead (one process)")
    args = parser.parse_args()
    models = args.models.split(",")
    wrk = ensure_apt("wrk", "wrk")
    if args.flower:
        flower_peer(args, wrk)
        return
    results = {model: (Endpoint(), Endpoint()) for model in models}
    with private_servers() as (broker_url, backend_url), tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "post.lua"
        script.write_text(POST_SCRIPT)
        apis = {
            model: secured_api(
                broker_url, backend_url, API_WORKERS=args.workers, API_THREADS=args.threads, API_WORKER_CLASS=model
            )
            for model in models
        }
        try:
            for api in apis.values():
                api.start().wait_ready()
            for _ in range(args.rounds):
                for model, api in apis.items():
                    noop, post = results[model]
                    noop.add(api, (wrk, f"{api.url}/healthz", args.seconds, args.connections, None))
                    post.add(api, (wrk, f"{api.url}/tasks", args.seconds, args.connections, script))
        finally:
            for api in apis.values():
                api.stop()
    for model, (noop, post) in results.items():
        print(noop.line(f"{model}: no-op GET /healthz"))
        print(post.line(f"{model}: POST /tasks (add)"))
        ratio = median(post.rates) / median(noop.rates)
        print(f"{model}: ratio POST/no-op     : {ratio:.2f}")
        if model == "gevent":  # the serving model the API ships with
            print(f"goal: POST >= 0.50 x no-op under gevent: {ratio:.2f} ({'met' if ratio >= 0.5 else 'NOT met'})")
    if len(models) > 1:
        first, *others = models
        for other in others:
            ratio = median(results[first][1].rates) / median(results[other][1].rates)
            print(f"POST rate {first}/{other}      : {ratio:.2f}")


if __name__ == "__main__":
    main()
