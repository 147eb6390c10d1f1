"""Worker drain rate: our production worker against peers, all in one run.

Everything runs against one private RabbitMQ node and Redis, two processes
per consumer:
* ceiling: raw kombu consume (prefetch 100, manual ack), no task framework;
* Celery's own defaults (bench/celery_default.py): acks on receipt, no
  result, prefetch 4 (what the framework does without guarantees);
* Dramatiq (bench/dramatiq_actors.py), acks late and persistent messages,
  once counting in Redis and once storing every result with its Redis
  results middleware (the peer with our guarantees);
* ours: ``run.sh worker`` (prefork, acks late, reject on worker lost,
  persistent messages, results and the STARTED state stored in Redis,
  prefetch 1, metrics), then variants of one setting at a time.
N no-op tasks are queued first; the rate is measured from the first
completion to the last, so process start-up is not counted.  Finally, the
latency of one task submitted behind a queue of D tasks shows how latency
grows with queue depth.  Goal (issue 25): ours >= 0.5 x Dramatiq with
equal guarantees (the ratio to Celery's defaults is printed beside it).

    .venv/bin/python -m bench.drain [--tasks 5000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from bench.common import REPO, Worker, cpu_seconds, median, private_servers
from testing.faults import make_client
from testing.servers import Process, new_server_dir
from workqueue.celery_app import DEFAULT_QUEUE
from workqueue.client import queue_status


@dataclass(frozen=True)
class Drained:
    rate: float  # tasks per second, first completion to last
    cpu_ms: float  # CPU time of the consumer's processes per task, same span


def wait_count(count: Callable[[], int], target: int, cpu: Callable[[], float], timeout: float = 600) -> Drained:
    """Rate and CPU per task from the first completion until ``count() >= target``.

    ``cpu`` reads the consumer's CPU seconds so far: it moves less with the
    machine's noise than a rate does.
    """
    deadline = time.monotonic() + timeout
    first = None
    while time.monotonic() < deadline:
        done = count()
        if done and first is None:
            first = (time.monotonic(), done, cpu())
        if done >= target:
            assert first is not None
            elapsed, tasks = time.monotonic() - first[0], target - first[1]
            rate = tasks / elapsed if elapsed > 0 else float("inf")
            return Drained(rate, 1000 * (cpu() - first[2]) / max(tasks, 1))
        time.sleep(0.01)
    raise TimeoutError(f"only {count()} of {target} done")


def raw_kombu(broker_url: str, n: int) -> Drained:
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
            started, first, cpu = time.monotonic(), received, time.process_time()
            while received < n:
                connection.drain_events(timeout=10)
        tasks = n - first
        return Drained(tasks / (time.monotonic() - started), 1000 * (time.process_time() - cpu) / tasks)


def dramatiq_rate(broker_url: str, backend_url: str, n: int, store_results: bool) -> Drained:
    broker_url = broker_url.rstrip("/") + "/%2F"  # pika wants the default vhost spelled out
    env = {
        **os.environ,
        "BENCH_BROKER_URL": broker_url,
        "BENCH_REDIS_URL": backend_url,
        "BENCH_DRAMATIQ_RESULTS": "1" if store_results else "0",
    }
    store = redis.Redis.from_url(backend_url)
    store.flushdb()
    # The actors module reads its mode on import: send from a process of its own.
    send = f"from bench import dramatiq_actors as a\nfor i in range({n}): a.noop.send(i)\na.broker.close()"
    subprocess.run([sys.executable, "-c", send], env=env, cwd=str(REPO), check=True)
    log_dir = new_server_dir("dramatiq")
    argv = [sys.executable, "-m", "dramatiq", "bench.dramatiq_actors", "--processes", "2", "--threads", "1"]
    process = Process(argv, env, log_dir / "dramatiq.log", cwd=str(REPO))
    # One key per stored result; without results, one counter.
    done = store.dbsize if store_results else lambda: int(store.get("dramatiq-done") or 0)
    try:
        return wait_count(done, n, lambda: cpu_seconds(process.pid))
    finally:
        process.stop(30)


def celery_default_rate(broker_url: str, n: int) -> Drained:
    """Celery's defaults (bench/celery_default.py): acks on receipt, no result stored."""
    env = {**os.environ, "BENCH_BROKER_URL": broker_url}
    os.environ["BENCH_BROKER_URL"] = broker_url
    from bench import celery_default  # reads BENCH_BROKER_URL on import

    app = celery_default.app
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task("noop", args=(i,), producer=producer)
    log_dir = new_server_dir("celery-default")
    argv = [sys.executable, "-m", "celery", "-A", "bench.celery_default", "worker", "--concurrency", "2"]
    process = Process(argv, env, log_dir / "worker.log", cwd=str(REPO))
    try:
        # Nothing is stored: count what left the queue.  With acks on receipt a
        # message leaves as its task starts; at most the 8 prefetched no-ops
        # are still running when the queue reads empty.
        with app.connection_for_read() as connection:
            ready = lambda: queue_status(connection, celery_default.QUEUE)[0]  # noqa: E731
            return wait_count(lambda: n - ready(), n, lambda: cpu_seconds(process.pid))
    finally:
        process.stop(30)
        app.close()


def publish_celery_tasks(broker_url: str, backend_url: str, n: int) -> list[str]:
    """Queue ``n`` add tasks through ``TaskClient``, as the API does (record + publisher confirm)."""
    client = make_client(broker_url, backend_url, Path(tempfile.gettempdir()))
    try:
        return [client.submit("add", {"x": i, "y": i}) for i in range(n)]
    finally:
        client.close()


def celery_rate(broker_url: str, backend_url: str, n: int, extra_args: tuple[str, ...] = (), **env: str) -> Drained:
    results = redis.Redis.from_url(backend_url)
    results.flushdb()
    publish_celery_tasks(broker_url, backend_url, n)
    submitted = results.dbsize()
    app = env.pop("BENCH_APP", None)
    worker = Worker(broker_url, backend_url, name="drain", **env)
    if app:  # run.sh worker's command line, another app
        argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-n", worker.nodename, "--loglevel", "info"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", *extra_args]
        worker.process = Process(argv, worker.env, worker.dir / "worker.log", cwd=str(REPO))
    else:
        worker.start(*extra_args)
    try:
        # Count the results: the keys the submissions left (records and
        # the task list's index) are there before the worker starts.
        assert worker.process is not None
        pid = worker.process.pid
        return wait_count(lambda: results.dbsize() - submitted, n, lambda: cpu_seconds(pid))
    finally:
        worker.stop()


def latency_behind(broker_url: str, backend_url: str, depth: int) -> tuple[int, float]:
    """(tasks queued ahead, seconds) for one task submitted behind ``depth`` queued tasks.

    The queue is filled first (publishing is slower than draining, so it
    would never fill under a running worker); the worker then starts, and
    the marker's wait is measured from its submission, behind what is still
    queued at that moment.
    """
    results = redis.Redis.from_url(backend_url)
    publish_celery_tasks(broker_url, backend_url, depth)
    worker = Worker(broker_url, backend_url, name="latency").start().wait_ready()
    try:
        with Connection(broker_url) as connection:
            ahead = queue_status(connection, DEFAULT_QUEUE)[0]
        started = time.monotonic()
        marker = publish_celery_tasks(broker_url, backend_url, 1)[0]
        while not results.exists(f"celery-task-meta-{marker}"):
            time.sleep(0.002)
        return ahead, time.monotonic() - started
    finally:
        worker.stop()


HIREDIS = "hiredis==3.5.0"

VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "Celery's own Redis result backend": ((), {"BENCH_APP": "bench.stock_worker"}),
    "WORKER_LOG_TASKS=true": ((), {"WORKER_LOG_TASKS": "true"}),
    "WORKER_MAX_TASKS_PER_CHILD=1000": ((), {"WORKER_MAX_TASKS_PER_CHILD": "1000"}),
    "the three above (before issue 15)": (
        (),
        {"BENCH_APP": "bench.stock_worker", "WORKER_LOG_TASKS": "true", "WORKER_MAX_TASKS_PER_CHILD": "1000"},
    ),
    "prefetch 4": ((), {"WORKER_PREFETCH_MULTIPLIER": "4"}),
    "TASK_STARTED_DELAY=0": ((), {"TASK_STARTED_DELAY": "0"}),
    "TASK_TRACK_STARTED=false": ((), {"TASK_TRACK_STARTED": "false"}),
    "threads pool x 4 (no IPC)": (("--pool", "threads"), {"WORKER_CONCURRENCY": "4"}),
    "1 proc": ((), {"WORKER_CONCURRENCY": "1"}),
    "4 proc": ((), {"WORKER_CONCURRENCY": "4"}),
}


def hiredis_path() -> str:
    """A directory holding hiredis, for PYTHONPATH: redis-py parses replies with it when it can import it.

    Not in .venv: there every row would use it.
    """
    target = new_server_dir("hiredis")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(target)]
    subprocess.run([*pip, HIREDIS], check=True)
    return str(target)


RAW, DEFAULT, COUNTER, EQUAL, OURS = (
    "raw kombu consume (ceiling)",
    "celery defaults: acks early, no result",
    "dramatiq: acks late, no result (counter)",
    "dramatiq: acks late + redis result",
    "celery production (ours)",
)


def median_drain(runs: list[Drained]) -> Drained:
    return Drained(median([run.rate for run in runs]), median([run.cpu_ms for run in runs]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the peers and production, alternating")
    parser.add_argument("--quick", action="store_true", help="peers and production only: no variants, no latency")
    args = parser.parse_args()
    n = args.tasks
    runs: dict[str, list[Drained]] = {}
    latencies: list[tuple[int, float]] = []  # (tasks ahead, seconds)
    with private_servers() as (broker_url, backend_url):
        measure: dict[str, Callable[[], Drained]] = {
            RAW: lambda: raw_kombu(broker_url, n),
            DEFAULT: lambda: celery_default_rate(broker_url, n),
            COUNTER: lambda: dramatiq_rate(broker_url, backend_url, n, False),
            EQUAL: lambda: dramatiq_rate(broker_url, backend_url, n, True),
            OURS: lambda: celery_rate(broker_url, backend_url, n),
        }
        if not args.quick:
            variants = {**VARIANTS, "hiredis (redis-py's C parser)": ((), {"PYTHONPATH": hiredis_path()})}
            for name, (extra_args, env) in variants.items():
                measure[f"  {name}"] = partial(celery_rate, broker_url, backend_url, n, extra_args, **env)
        for _ in range(args.rounds):  # alternating, so a noisy spell hits every row alike
            for name, run in measure.items():
                runs.setdefault(name, []).append(run())
        if not args.quick:
            latencies = [latency_behind(broker_url, backend_url, depth) for depth in (0, 1000, 4000)]
    rows = {name: median_drain(found) for name, found in runs.items()}
    raw, default, equal, ours = rows[RAW].rate, rows[DEFAULT].rate, rows[EQUAL].rate, rows[OURS].rate
    print(
        f"{n} no-op tasks, 2 processes per consumer; variants: ours, one thing changed; medians of {args.rounds} rounds"
    )
    print(f"{'consumer':44} {'tasks/s':>8} {'CPU ms/task':>12} {'vs raw':>7} {'vs celery':>10} {'vs dramatiq':>12}")
    for name, row in rows.items():
        print(
            f"{name:44} {row.rate:8.0f} {row.cpu_ms:12.2f} {row.rate / raw:7.2f} "
            f"{row.rate / default:10.2f} {row.rate / equal:12.2f}"
        )
    ratio, verdict = ours / equal, "met" if ours / equal >= 0.5 else "NOT met"
    print(f"goal: production >= 0.50 x dramatiq with equal guarantees: {ratio:.2f} ({verdict})")
    print(f"(production / celery's own defaults: {ours / default:.2f})")
    if latencies:
        print("latency of one add behind a queue of D tasks (production worker):")
    for ahead, seconds in latencies:
        print(f"  D={ahead:5d}: {seconds * 1000:8.1f} ms   (D / drain rate = {ahead / ours * 1000:8.1f} ms)")


if __name__ == "__main__":
    main()
