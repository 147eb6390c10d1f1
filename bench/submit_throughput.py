"""POST /tasks throughput vs a no-op endpoint on the same gunicorn server.

Both are driven by wrk (C, so the load generator is not the bottleneck)
against one ``run.sh api`` with its production settings (gthread, publisher
confirms, submission record in Redis).  The no-op baseline is ``GET
/healthz``: same server, same Flask middleware, no broker or Redis.  Rounds
alternate the two so machine noise hits both alike; the ratio of medians is
the figure.  Goal: POST >= 0.5 of the no-op rate.

    .venv/bin/python bench/submit_throughput.py [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

from common import Api, ensure_apt, median, private_servers

POST_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"task": "add", "args": [2, 3]}'
wrk.headers["Content-Type"] = "application/json"
"""


def run_wrk(wrk: str, url: str, seconds: int, connections: int, script: Path | None) -> tuple[float, float]:
    argv = [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        argv[1:1] = ["-s", str(script)]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{output}")
    return rate, float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", default="2", help="API_WORKERS (gunicorn processes)")
    parser.add_argument("--threads", default="4", help="API_THREADS per process")
    args = parser.parse_args()
    wrk = ensure_apt("wrk", "wrk")
    with private_servers() as (broker_url, backend_url), tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "post.lua"
        script.write_text(POST_SCRIPT)
        api = Api(broker_url, backend_url, API_WORKERS=args.workers, API_THREADS=args.threads).start().wait_ready()
        try:
            noop, post, noop_p50, post_p50 = [], [], [], []
            for _ in range(args.rounds):
                rate, p50 = run_wrk(wrk, f"{api.url}/healthz", args.seconds, args.connections, None)
                noop.append(rate)
                noop_p50.append(p50)
                rate, p50 = run_wrk(wrk, f"{api.url}/tasks", args.seconds, args.connections, script)
                post.append(rate)
                post_p50.append(p50)
        finally:
            api.stop()
    for label, rates, p50s in (("no-op GET /healthz", noop, noop_p50), ("POST /tasks (add) ", post, post_p50)):
        rounds = [round(r) for r in rates]
        print(f"{label} : {median(rates):8.0f} req/s  p50 {median(p50s):.2f} ms  rounds {rounds}")
    print(f"ratio POST/no-op   : {median(post) / median(noop):.2f}  (goal >= 0.5; publisher confirms on)")


if __name__ == "__main__":
    main()
