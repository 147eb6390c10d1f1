"""Cost of one probe call: celery_status.sh --live/--ready vs Celery's own commands.

Against one running ``run.sh worker`` and a private broker, it times (wall)
and measures CPU (user+sys of the child, from getrusage) per call of:
``celery_status.sh --live``, ``--ready``, ``celery -A worker.main inspect ping
-d <this worker>`` and the book's ``celery -A worker.main status``.
Goals: --live/--ready at least 100x cheaper in CPU than ``inspect ping``,
and under 20 ms wall.

    .venv/bin/python -m bench.probes [--calls 200] [--celery-calls 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

from bench.common import REPO, Worker, median, private_servers, running


def cost(argv: list[str], env: dict[str, str], calls: int) -> tuple[float, float]:
    """Median wall ms and mean CPU ms per call."""
    walls = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(calls):
        started = time.perf_counter()
        result = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
        walls.append((time.perf_counter() - started) * 1000)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {result.stdout}{result.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000 / calls
    return median(walls), cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--celery-calls", type=int, default=5)
    args = parser.parse_args()
    with private_servers() as (broker_url, backend_url):
        worker = Worker(broker_url, backend_url, name="probed")
        with running(worker):
            env = {**worker.env, "WORKER_NODENAME": worker.nodename}
            celery = [sys.executable, "-m", "celery", "-A", "worker.main"]
            rows = {
                "celery_status.sh --live": cost([str(REPO / "celery_status.sh"), "--live"], env, args.calls),
                "celery_status.sh --ready": cost([str(REPO / "celery_status.sh"), "--ready"], env, args.calls),
                "celery inspect ping -d": cost(
                    [*celery, "inspect", "ping", "-d", worker.nodename], env, args.celery_calls
                ),
                "celery status (book)": cost([*celery, "status"], env, args.celery_calls),
            }
    ping_cpu = rows["celery inspect ping -d"][1]
    status_cpu = rows["celery status (book)"][1]
    print(f"{'probe':26} {'wall ms':>8} {'cpu ms':>8} {'cpu vs ping':>12} {'cpu vs status':>14}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:26} {wall:8.2f} {cpu:8.2f} {ping_cpu / cpu:11.0f}x {status_cpu / cpu:13.0f}x")
    print(f"(cpus: {os.cpu_count()}; goal: --live/--ready >= 100x cheaper in CPU than inspect ping, < 20 ms wall)")


if __name__ == "__main__":
    main()
