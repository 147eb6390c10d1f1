"""Worker drain rate: Celery with our production settings vs raw kombu vs Dramatiq.

Everything runs against one private RabbitMQ node and Redis, in one run:
* ceiling: raw kombu consume (prefetch 100, manual ack), no task framework;
* peer: Dramatiq, 2 processes x 1 thread, acks late, one Redis write per message;
* ours: ``run.sh worker`` (prefork, acks late, results stored in Redis, prefetch 1),
  then variants of one setting at a time (prefetch, concurrency, pool).
N no-op tasks (``add``) are queued first; the rate is measured from the first
completion to the last, so process start-up is not counted.  Finally, the
latency of one task submitted behind a queue of D tasks shows how latency
grows with queue depth.  Goals: ours >= Dramatiq, ours >= 0.4 x raw consume.

    .venv/bin/python -m bench.drain [--tasks 5000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from bench.common import REPO, Worker, private_servers
from testing.faults import make_client
from testing.servers import Process, new_server_dir


def wait_count(count: Callable[[], int], target: int, timeout: float = 600) -> float:
    """Seconds from the first completion until ``count() >= target``."""
    deadline = time.monotonic() + timeout
    first = None
    while time.monotonic() < deadline:
        done = count()
        if done and first is None:
            first = (time.monotonic(), done)
        if done >= target:
            assert first is not None
            elapsed = time.monotonic() - first[0]
            return (target - first[1]) / elapsed if elapsed > 0 else float("inf")
        time.sleep(0.01)
    raise TimeoutError(f"only {count()} of {target} done")


def raw_kombu(broker_url: str, n: int) -> float:
    queue = Queue("raw-bench", Exchange("raw-bench", "direct"), "raw-bench", durable=True)
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel(), exchange=queue.exchange, routing_key="raw-bench")
        queue(producer.channel).declare()
        for i in range(n):
            producer.publish({"x": i}, delivery_mode=2)
        received = 0

        def on_message(body: object, message) -> None:
            nonlocal received
            message.ack()
            received += 1

        channel = connection.channel()
        with Consumer(channel, [queue], callbacks=[on_message], prefetch_count=100):
            connection.drain_events(timeout=10)
            started, first = time.monotonic(), received
            while received < n:
                connection.drain_events(timeout=10)
        return (n - first) / (time.monotonic() - started)


def dramatiq_rate(broker_url: str, backend_url: str, n: int) -> float:
    broker_url = broker_url.rstrip("/") + "/%2F"  # pika wants the default vhost spelled out
    env = {**os.environ, "BENCH_BROKER_URL": broker_url, "BENCH_REDIS_URL": backend_url}
    os.environ.update(BENCH_BROKER_URL=broker_url, BENCH_REDIS_URL=backend_url)
    from bench import dramatiq_actors  # the actors read the environment above on import

    counter = redis.Redis.from_url(backend_url)
    counter.delete("dramatiq-done")
    for i in range(n):
        dramatiq_actors.noop.send(i)
    dramatiq_actors.dramatiq.get_broker().close()
    log_dir = new_server_dir("dramatiq")
    argv = [sys.executable, "-m", "dramatiq", "bench.dramatiq_actors", "--processes", "2", "--threads", "1"]
    process = Process(argv, env, log_dir / "dramatiq.log", cwd=str(REPO))
    try:
        return wait_count(lambda: int(counter.get("dramatiq-done") or 0), n)
    finally:
        process.stop(30)


def publish_celery_tasks(broker_url: str, backend_url: str, n: int) -> list[str]:
    """Queue ``n`` add tasks through ``TaskClient``, as the API does (record + publisher confirm)."""
    client = make_client(broker_url, backend_url, Path(tempfile.gettempdir()))
    try:
        return [client.submit("add", {"x": i, "y": i}) for i in range(n)]
    finally:
        client.close()


def celery_rate(broker_url: str, backend_url: str, n: int, extra_args: tuple[str, ...] = (), **env: str) -> float:
    results = redis.Redis.from_url(backend_url)
    results.flushdb()
    publish_celery_tasks(broker_url, backend_url, n)
    worker = Worker(broker_url, backend_url, name="drain", **env).start(*extra_args)
    try:
        # Each task leaves its submission record and its result: count results only.
        return wait_count(lambda: results.dbsize() - n, n)
    finally:
        worker.stop()


def latency_behind(broker_url: str, backend_url: str, depth: int) -> float:
    """Seconds for one task submitted behind ``depth`` queued tasks (worker running)."""
    results = redis.Redis.from_url(backend_url)
    worker = Worker(broker_url, backend_url, name="latency").start().wait_ready()
    try:
        publish_celery_tasks(broker_url, backend_url, depth)
        started = time.monotonic()
        marker = publish_celery_tasks(broker_url, backend_url, 1)[0]
        while not results.exists(f"celery-task-meta-{marker}"):
            time.sleep(0.002)
        return time.monotonic() - started
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    args = parser.parse_args()
    n = args.tasks
    rows: list[tuple[str, float]] = []
    with private_servers() as (broker_url, backend_url):
        rows.append(("raw kombu consume (ceiling)", raw_kombu(broker_url, n)))
        rows.append(("dramatiq 2 proc x 1 thread (peer)", dramatiq_rate(broker_url, backend_url, n)))
        production = celery_rate(broker_url, backend_url, n)
        rows.append(("celery production (2 proc, prefetch 1)", production))
        rows.append(("  prefetch 4", celery_rate(broker_url, backend_url, n, WORKER_PREFETCH_MULTIPLIER="4")))
        rows.append(("  prefetch 16", celery_rate(broker_url, backend_url, n, WORKER_PREFETCH_MULTIPLIER="16")))
        rows.append(("  TASK_TRACK_STARTED=false", celery_rate(broker_url, backend_url, n, TASK_TRACK_STARTED="false")))
        rows.append(
            ("  WORKER_DEBUG_LEVEL=warning", celery_rate(broker_url, backend_url, n, WORKER_DEBUG_LEVEL="warning"))
        )
        rows.append(
            (
                "  threads pool x 4 (no IPC)",
                celery_rate(broker_url, backend_url, n, ("--pool", "threads"), WORKER_CONCURRENCY="4"),
            )
        )
        for processes in ("1", "4"):
            rows.append(
                (
                    f"  {processes} proc, prefetch 1",
                    celery_rate(broker_url, backend_url, n, WORKER_CONCURRENCY=processes),
                )
            )
        latencies = [(depth, latency_behind(broker_url, backend_url, depth)) for depth in (0, 1000, 4000)]
    raw, peer = rows[0][1], rows[1][1]
    print(f"{'consumer':42} {'tasks/s':>9} {'vs raw':>7} {'vs dramatiq':>12}")
    for name, rate in rows:
        print(f"{name:42} {rate:9.0f} {rate / raw:7.2f} {rate / peer:12.2f}")
    print(
        f"goal: production >= 1.00 x dramatiq (now {production / peer:.2f}), >= 0.40 x raw (now {production / raw:.2f})"
    )
    print("latency of one add behind a queue of D tasks (production worker):")
    for depth, seconds in latencies:
        predicted = depth / production
        print(f"  D={depth:5d}: {seconds * 1000:8.1f} ms   (D / drain rate = {predicted * 1000:8.1f} ms)")


if __name__ == "__main__":
    main()
