"""Shared set-up for the benchmarks: private servers and services, cleaned up always."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
from collections.abc import Iterator, Sequence

import requests

from testing import servers
from testing.processes import REPO, Api, Worker

__all__ = [
    "REPO",
    "Api",
    "Worker",
    "authorized_session",
    "history_arguments",
    "cpu_seconds",
    "descendants",
    "ensure_apt",
    "median",
    "percentile",
    "private_servers",
    "process_stats",
    "running",
    "secured_api",
    "submit_add",
]

# The chart requires a token (api.auth.enabled), so the benchmarks run the API
# as it is deployed: with API_TOKENS set and the token checked on each /tasks call.
TOKEN = f"bench-{secrets.token_urlsafe(16)}"


def history_arguments(doc: str | None) -> argparse.Namespace:
    """``--tasks`` (recorded tasks, 100,000) and ``--rounds`` (30) of the benchmarks over a big history."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=30)
    return parser.parse_args()


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


def secured_api(broker_url: str, backend_url: str, **extra: str) -> Api:
    """``run.sh api`` with production settings and ``TOKEN`` required on /tasks*."""
    return Api(broker_url, backend_url, API_TOKENS=TOKEN, **extra)


def authorized_session() -> requests.Session:
    """A keep-alive session that sends ``TOKEN`` as a bearer token."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    return session


def submit_add(session: requests.Session, api_url: str, x: int, y: int) -> str:
    """``POST /tasks`` of ``add(x, y)``; the new task's id."""
    response = session.post(f"{api_url}/tasks", json={"task": "add", "kwargs": {"x": x, "y": y}}, timeout=10)
    if response.status_code != 202:
        raise RuntimeError(f"POST /tasks answered {response.status_code}: {response.text[:200]}")
    return response.json()["id"]


def process_stats() -> dict[int, list[str]]:
    """Fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, ...) of every live process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The name is in parentheses and may hold spaces or ")": split after its last ")".
                found[int(entry)] = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
    return found


def descendants(pid: int, stats: dict[int, list[str]] | None = None) -> list[int]:
    """Children of ``pid``, their children and so on, in pid order (from ``stats``, or read from /proc)."""
    children: dict[int, list[int]] = {}
    for child, fields in (stats if stats is not None else process_stats()).items():
        children.setdefault(int(fields[1]), []).append(child)
    found, pending = [], [pid]
    while pending:
        below = children.get(pending.pop(), [])
        found.extend(below)
        pending.extend(below)
    return sorted(found)


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


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) spent so far by ``pid`` and its descendants, living or reaped.

    A prefork pool replaces its processes (WORKER_MAX_TASKS_PER_CHILD): what
    a reaped child spent is in its parent's ``cutime``/``cstime``.
    """
    stats = process_stats()
    ticks = sum(
        sum(int(field) for field in stats[member][11:15])  # utime, stime, cutime, cstime (stat fields 14-17)
        for member in (pid, *descendants(pid, stats))
        if member in stats
    )
    return ticks / os.sysconf("SC_CLK_TCK")
