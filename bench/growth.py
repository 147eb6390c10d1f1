"""Cost as the work grows: POST and drain rates with a queue behind them, and a sustained run.

Part 1, queue depth: on one private RabbitMQ and Redis, the task queue is
filled to each depth (0, 100,000, 1,000,000 by default; messages built by
Celery's own ``create_task_message`` with the API's header, published without
confirms to fill fast), then at each depth: ``POST /tasks`` through wrk
against one API process of ours, the drain rate of one worker pod
(completions counted by its ``celery_task_succeeded_total`` over a window),
and RabbitMQ's memory per queued message.

Part 2, sustained: the API (2 processes) and a worker pod take a steady
stream of submissions over HTTP for ``--sustain`` seconds while their
processes' memory (PSS) and the metrics directory are sampled: the figures
show whether anything grows with the work done.

Redis memory per task is ``bench/capacity.py``'s; the task list's worst page
at 1,000,000 tasks is ``python -m bench.listing --tasks 1000000``.

    .venv/bin/python -m bench.growth [--depths 0,100000,1000000] [--sustain 600] [--rate 60]
"""

from __future__ import annotations

import argparse
import re
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests
from kombu import Connection, Producer

from bench.common import authorized_session, descendants, ensure_apt, private_servers, secured_api, submit_add
from bench.memory import read_memory
from bench.submit_throughput import POST_SCRIPT, run_wrk
from testing import servers
from testing.faults import make_client
from testing.processes import Worker
from testing.servers import free_port, wait_until
from workqueue.celery_app import DEFAULT_QUEUE, make_queue

DRAIN_CEILING = 2000  # tasks/s no worker pod reaches here: the top-up before a drain window


def fill(broker_url: str, client, count: int) -> None:
    """``count`` more add tasks in the queue, as the API's publisher builds them, without confirms (fast)."""
    amqp = client.celery.amqp
    queue = make_queue(client.settings, DEFAULT_QUEUE)
    # py-amqp sets TCP_USER_TIMEOUT to 1 s: a socket RabbitMQ stops reading for
    # longer (credit flow while a classic queue pages ~1,000,000 messages to
    # disk) dies with ETIMEDOUT. A fill must wait the flow out instead.
    with Connection(broker_url, transport_options={"socket_settings": {socket.TCP_USER_TIMEOUT: 0}}) as connection:
        producer = Producer(connection.channel(), auto_declare=False)
        queue(producer.channel).declare()
        for _ in range(count):
            message = amqp.create_task_message(str(uuid.uuid4()), "workqueue.add", (), {"x": 1, "y": 2})
            headers = {**message.headers, "workqueue_submitted_at": time.time()}
            producer.publish(
                message.body, exchange="", routing_key=DEFAULT_QUEUE, headers=headers,
                delivery_mode=2, serializer="json", **message.properties,
            )  # fmt: skip


def queue_figures(node: servers.RabbitMQ) -> tuple[int, int]:
    for row in node.ctl("list_queues", "-q", "--no-table-headers", "name", "messages", "memory").splitlines():
        name, messages, memory = row.split()
        if name == DEFAULT_QUEUE:
            return int(messages), int(memory)
    return 0, 0


def succeeded(port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^celery_task_succeeded_total\{[^}]*\} (\S+)$", text, re.M))


def drain_rate(broker_url: str, backend_url: str, window: float) -> float:
    port = free_port()
    worker = Worker(broker_url, backend_url, name="growth", WORKER_METRICS_PORT=str(port)).start().wait_ready()
    try:
        time.sleep(3)  # past start-up
        before, started = succeeded(port), time.monotonic()
        time.sleep(window)
        return (succeeded(port) - before) / (time.monotonic() - started)
    finally:
        worker.stop()


def depth_part(depths: list[int], seconds: int, window: float) -> None:
    wrk = ensure_apt("wrk", "wrk")
    servers.reap_leftovers()
    with (
        servers.started(servers.RabbitMQ()) as node,
        servers.started(servers.Redis()) as store,
        tempfile.TemporaryDirectory() as scratch,
    ):
        broker_url, backend_url = node.url, store.url
        client = make_client(broker_url, backend_url, Path(scratch))
        script = Path(scratch) / "post.lua"
        script.write_text(POST_SCRIPT)
        api = secured_api(broker_url, backend_url, API_WORKERS="1")
        api.start().wait_ready()
        try:
            for depth in depths:
                queued, _ = queue_figures(node)
                if depth > queued:
                    started = time.monotonic()
                    fill(broker_url, client, depth - queued)
                    print(f"  filled to {depth:,} in {time.monotonic() - started:.0f} s", flush=True)
                wait_until(lambda d=depth: queue_figures(node)[0] >= d, 120, "the queue's count", interval=2.0)
                time.sleep(3)  # list_queues' memory lags
                messages, memory = queue_figures(node)
                post, p50, _ = run_wrk(wrk, f"{api.url}/tasks", seconds, 16, script)
                # Enough beyond the depth that the queue never runs dry while the drain is counted.
                fill(broker_url, client, int((window + 5) * DRAIN_CEILING))
                drain = drain_rate(broker_url, backend_url, window)
                per_message = memory / messages if messages else 0
                print(
                    f"[growth] queued={depth:>9,}: POST {post:5.0f} req/s (p50 {p50:.1f} ms), "
                    f"drain {drain:5.0f} tasks/s, RabbitMQ {per_message:,.0f} B per queued message",
                    flush=True,
                )
        except Exception:  # the node's own account of what went wrong (a 1,000,000 fill once broke a pipe)
            for log in sorted((node.dir / "log").glob("*.log")):
                print(f"--- {log.name}, last lines:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
            raise
        finally:
            api.stop()
            client.close()


def pod_pss(root: int) -> float:
    """PSS of a server process and its children, in MiB."""
    total = 0
    for pid in [root, *descendants(root)]:
        try:
            total += read_memory(pid).pss
        except (OSError, KeyError):
            pass
    return total / 1024


def sustained_part(duration: float, rate: float, sample_every: float) -> None:
    with private_servers() as (broker_url, backend_url):
        port = free_port()
        api = secured_api(broker_url, backend_url)
        worker = Worker(broker_url, backend_url, name="sustained", WORKER_METRICS_PORT=str(port))
        api.start()
        worker.start()
        api.wait_ready()
        worker.wait_ready()
        stop = threading.Event()
        sent = [0]

        def submit() -> None:
            session = authorized_session()
            next_at = time.monotonic()
            while not stop.is_set():
                submit_add(session, api.url, 1, 2)
                sent[0] += 1
                next_at += 1 / rate
                time.sleep(max(0.0, next_at - time.monotonic()))

        thread = threading.Thread(target=submit, daemon=True)
        thread.start()
        rows = []
        try:
            started = time.monotonic()
            while time.monotonic() - started < duration:
                time.sleep(sample_every)
                files = len(list((worker.runtime_dir / "prometheus-worker").glob("*.db")))
                rows.append((time.monotonic() - started, sent[0], succeeded(port), pod_pss(api.process.pid),
                             pod_pss(worker.process.pid), files))  # fmt: skip
                elapsed, count, done, api_mib, worker_mib, metric_files = rows[-1]
                print(f"  {elapsed:4.0f} s: submitted {count:,}, done {done:,.0f}, API {api_mib:.0f} MiB PSS, "
                      f"worker {worker_mib:.0f} MiB PSS, worker metric files {metric_files}", flush=True)  # fmt: skip
        finally:
            stop.set()
            api.stop()
            worker.stop()
    first, last = rows[0], rows[-1]
    print(
        f"[growth] sustained {duration:.0f} s at {rate:.0f} tasks/s: {last[1]:,} submitted, {last[2]:,.0f} done; "
        f"API PSS {first[3]:.0f} -> {last[3]:.0f} MiB (max {max(r[3] for r in rows):.0f}), "
        f"worker PSS {first[4]:.0f} -> {last[4]:.0f} MiB (max {max(r[4] for r in rows):.0f}), "
        f"worker metric files {first[5]} -> {last[5]} (max {max(r[5] for r in rows)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="0,100000,1000000")
    parser.add_argument("--seconds", type=int, default=8, help="wrk seconds per POST figure")
    parser.add_argument("--window", type=float, default=20.0, help="seconds over which the drain is counted")
    parser.add_argument("--sustain", type=float, default=600.0, help="seconds of the sustained run (0: skip)")
    parser.add_argument("--rate", type=float, default=60.0, help="submissions per second in the sustained run")
    parser.add_argument("--sample-every", type=float, default=30.0)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",") if d.strip()]
    if depths:
        depth_part(depths, args.seconds, args.window)
    if args.sustain:
        sustained_part(args.sustain, args.rate, args.sample_every)


if __name__ == "__main__":
    main()
