"""End-to-end latency of one ``add``: POST /tasks until GET /tasks/<id> says SUCCESS.

One task at a time on an idle system (``run.sh api`` + ``run.sh worker``,
production settings); the client polls every millisecond.  The baseline,
measured in the same run, is an HTTP round trip to the no-op ``/healthz``
on the same server: the ratio says how many plain round trips one task
costs.  Goal: p50 under 20 ms.

    .venv/bin/python -m bench.latency [--tasks 300]
"""

from __future__ import annotations

import argparse
import time

import requests

from bench.common import Api, Worker, median, percentile, private_servers, running


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args()
    with private_servers() as (broker_url, backend_url):
        api, worker = Api(broker_url, backend_url), Worker(broker_url, backend_url, name="bench")
        with running(api, worker):
            session = requests.Session()
            noop = []
            for _ in range(args.tasks):
                started = time.perf_counter()
                session.get(f"{api.url}/healthz").raise_for_status()
                noop.append((time.perf_counter() - started) * 1000)
            latencies, polls = [], []
            for i in range(args.tasks + 20):
                started = time.perf_counter()
                response = session.post(f"{api.url}/tasks", json={"task": "add", "args": [i, 1]})
                assert response.status_code == 202, response.text
                location, count = f"{api.url}{response.headers['Location']}", 0
                while True:
                    count += 1
                    state = session.get(location).json()["state"]
                    if state == "SUCCESS":
                        break
                    assert state in ("PENDING", "STARTED"), state
                    time.sleep(0.001)
                if i >= 20:  # the first tasks warm up pool processes and connections
                    latencies.append((time.perf_counter() - started) * 1000)
                    polls.append(count)
    p50 = median(latencies)
    print(f"no-op round trip   : p50 {median(noop):.2f} ms")
    print(
        f"add POST->SUCCESS  : p50 {p50:.2f} ms  p90 {percentile(latencies, 0.9):.2f} ms  "
        f"p99 {percentile(latencies, 0.99):.2f} ms  ({median(polls):.0f} GETs per task)"
    )
    print(f"ratio task/no-op   : {p50 / median(noop):.1f}  (goal: p50 under 20 ms)")


if __name__ == "__main__":
    main()
