"""Shared set-up for the benchmarks: private servers and services, cleaned up always."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
from collections.abc import Iterator, Sequence

from testing import servers
from testing.processes import REPO, Api, Worker

__all__ = [
    "REPO",
    "Api",
    "Worker",
    "cpu_seconds",
    "ensure_apt",
    "median",
    "percentile",
    "private_servers",
    "process_tree",
    "running",
]


@contextlib.contextmanager
def private_servers() -> Iterator[tuple[str, str]]:
    """A private RabbitMQ node and Redis server for one benchmark run."""
    servers.reap_leftovers()
    try:
        with servers.started(servers.RabbitMQ()) as rabbitmq, servers.started(servers.Redis()) as redis:
            yield rabbitmq.url, redis.url
    finally:
        servers.kill_all()


@contextlib.contextmanager
def running(*services: Api | Worker) -> Iterator[None]:
    try:
        for service in services:
            service.start()
        for service in services:
            service.wait_ready()
        yield
    finally:
        for service in services:
            service.stop()


def ensure_apt(command: str, package: str) -> str:
    """Path of ``command``, installing ``package`` with apt when missing (root only)."""
    found = shutil.which(command)
    if found:
        return found
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], check=True)
    return shutil.which(command) or command


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) spent so far by ``pid`` and its descendants, living or reaped.

    A prefork pool replaces its processes (WORKER_MAX_TASKS_PER_CHILD): what
    a reaped child spent is in its parent's ``cutime``/``cstime``.
    """
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime (stat fields 14-17)
    return total / os.sysconf("SC_CLK_TCK")
