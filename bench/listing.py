"""GET /tasks over 100,000 recorded tasks: a filtered page, timed through TaskClient.list_tasks.

A private Redis gets N submission records with their index entries (written
exactly as TaskClient writes them) and a stored result for each: 90%
SUCCESS, 1% FAILURE, the rest PENDING, over the seven catalogued task names.
Then pages are read: unfiltered, by task name, by state (a common one and a
rare one, which scans the most), and following cursors.  The baseline of the
same run is one MGET of 50 results, the least a page of 50 must cost.
Goal: a filtered page of 50 answers in under 50 ms.

    .venv/bin/python -m bench.listing [--tasks 100000] [--rounds 30]
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import redis

from bench.common import history_arguments, median, percentile, private_servers
from testing.faults import make_client
from workqueue.client import RECORD_PREFIX


def populate(client, n: int) -> list[str]:
    names = sorted(client.catalogue)
    direct = client.celery.backend.client
    ids = []
    start = time.time() - n / 1000  # submitted over the last n ms
    for base in range(0, n, 2000):
        with direct.pipeline(transaction=False) as pipe:
            for i in range(base, min(n, base + 2000)):
                task_id, name, when = str(uuid.uuid4()), names[i % len(names)], start + i / 1000
                record = {"task": name, "submitted_at": "2026-11-23T00:00:00+00:00", "kwargs": {}}
                pipe.set(RECORD_PREFIX + task_id, json.dumps(record), ex=86_400)
                client.index.add(pipe, task_id, name, when)
                state = "FAILURE" if i % 100 == 0 else "SUCCESS" if i % 10 else "PENDING"
                if state != "PENDING":
                    meta = {"status": state, "result": 1, "task_id": task_id, "date_done": "2026-11-23T00:00:01"}
                    pipe.set(f"celery-task-meta-{task_id}", json.dumps(meta), ex=86_400)
                ids.append(task_id)
            pipe.execute()
    return ids


def timed(call, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    args = history_arguments(__doc__)
    with private_servers() as (broker_url, backend_url):
        client = make_client(broker_url, backend_url, Path("/tmp"))
        try:
            started = time.monotonic()
            ids = populate(client, args.tasks)
            print(f"recorded {len(ids)} tasks in {time.monotonic() - started:.1f} s")
            raw = redis.Redis.from_url(backend_url)
            keys = [f"celery-task-meta-{task_id}" for task_id in ids[:50]]
            cases = {
                "baseline: one MGET of 50": lambda: raw.mget(keys),
                "page of 50, no filter": lambda: client.list_tasks(limit=50),
                "page of 50, task=add": lambda: client.list_tasks(task="add", limit=50),
                "page of 50, state=SUCCESS": lambda: client.list_tasks(state="SUCCESS", limit=50),
                "page of 50, state=FAILURE (1%)": lambda: client.list_tasks(state="FAILURE", limit=50),
                "page of 500, no filter": lambda: client.list_tasks(limit=500),
            }
            results = {label: timed(call, args.rounds) for label, call in cases.items()}
            _, cursor = client.list_tasks(limit=50)
            deep = timed(lambda: client.list_tasks(cursor=cursor, limit=50), args.rounds)
            results["page of 50 after a cursor"] = deep
            found = len(client.list_tasks(state="FAILURE", limit=50)[0])
        finally:
            client.close()
    base = median(results["baseline: one MGET of 50"])
    for label, times in results.items():
        p50 = median(times)
        print(f"{label:34s}: p50 {p50:7.2f} ms  p95 {percentile(times, 0.95):7.2f} ms  ({p50 / base:5.1f}x baseline)")
    print(f"state=FAILURE page found {found} tasks in one slice of at most 1,000 index entries")
    worst = max(median(t) for label, t in results.items() if "state=" in label or "task=" in label)
    print(
        f"goal: a filtered page under 50 ms -> worst filtered p50 {worst:.1f} ms ({'met' if worst < 50 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
