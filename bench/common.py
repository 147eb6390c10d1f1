"""Shared set-up for the benchmarks: private servers and services, cleaned up always."""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
from collections.abc import Iterator, Sequence

from testing import servers
from testing.processes import REPO, Api, Worker

__all__ = ["REPO", "Api", "Worker", "ensure_apt", "median", "percentile", "private_servers", "running"]


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
