"""Capacity you can plan with: what one task costs Redis and RabbitMQ, and what a pod drains.

Measured on private servers: N tasks submitted through ``TaskClient`` (the
API's own path: record, index entries, one persistent message), then drained
by one worker pod (``run.sh worker``, 2 processes), for a small task (``add``)
and one with 1 KB of arguments (``xsum`` of 150 numbers).  Prints per task:

* Redis bytes for the submission record and its two index entries (queued),
  and with the final result too (done); Redis' ``used_memory`` delta / N;
* RabbitMQ bytes per queued message (the queue's memory and its message
  bytes, from ``rabbitmqctl list_queues``);
* the drain rate of the worker pod.

Usage: ``python -m bench.capacity [--tasks 20000]``.  The chart README's
sizing table is computed from these figures (bench/README.md, "Capacity").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import redis

from bench.common import Worker
from testing import servers
from testing.faults import make_client, unfinished
from testing.servers import wait_until

PAYLOADS = {
    "add": {"x": 1, "y": 2},
    "xsum, 1 KB of arguments": {"numbers": [123456.5] * 150},
}


def queue_memory(node: servers.RabbitMQ) -> tuple[int, int, int]:
    """(messages, memory, message_bytes) of the task queue, once RabbitMQ's figures settle."""
    line = node.ctl("list_queues", "-q", "--no-table-headers", "name", "messages", "memory", "message_bytes")
    for row in line.splitlines():
        name, messages, memory, message_bytes = row.split()
        if name == "celery":
            return int(messages), int(memory), int(message_bytes)
    return 0, 0, 0


def measure(task: str, kwargs: dict, count: int, workdir: Path) -> dict[str, float]:
    with servers.started(servers.RabbitMQ()) as node, servers.started(servers.Redis()) as store:
        client = make_client(node.url, store.url, workdir)
        stats = redis.Redis(port=store.port)
        try:
            before = stats.info("memory")["used_memory"]
            definition = client.catalogue[task.split(",")[0]]
            ids = [client.submit(definition, kwargs) for _ in range(count)]
            queued = stats.info("memory")["used_memory"]
            wait_until(lambda: queue_memory(node)[0] == count, 60, "the queue's figures", interval=1.0)
            time.sleep(5)  # list_queues' memory lags behind a few seconds
            messages, memory, message_bytes = queue_memory(node)
            worker = Worker(node.url, store.url, name="capacity").start().wait_ready()
            started = time.monotonic()
            wait_until(lambda: not unfinished(client, ids), 600, "the drain", interval=0.5)
            drained = count / (time.monotonic() - started)
            worker.stop()
            done = stats.info("memory")["used_memory"]
        finally:
            client.close()
    return {
        "redis_bytes_per_task_queued": (queued - before) / count,
        "redis_bytes_per_task_done": (done - before) / count,
        "rabbitmq_bytes_per_message": memory / max(messages, 1),
        "rabbitmq_message_bytes": message_bytes / max(messages, 1),
        "drain_per_s_one_worker_pod": drained,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    args = parser.parse_args()
    workdir = servers.new_server_dir("capacity")
    servers.reap_leftovers()
    try:
        for name, kwargs in PAYLOADS.items():
            figures = measure(name, kwargs, args.tasks, workdir)
            print(f"[capacity] {name}: " + json.dumps({k: round(v) for k, v in figures.items()}))
    finally:
        servers.kill_all()


if __name__ == "__main__":
    main()
