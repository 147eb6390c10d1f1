"""prometheus-client's multiprocess mode, decided in one place.

Under gunicorn and Celery's prefork pool the metrics are written by several
processes.  ``run.sh`` sets ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
own variable, read by the library when it is imported) to an emptied
directory per service; a scrape then merges what every process wrote.
Without it (tests, a solo pool) a scrape shows this process's own metrics.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.registry import Collector

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_mode() -> bool:
    return MULTIPROC_DIR_VARIABLE in os.environ


def scrape_registry() -> CollectorRegistry:
    """A registry that collects every process's metrics (or this process's)."""
    registry = CollectorRegistry()
    if multiprocess_mode():
        prometheus_multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    return registry


def process_exited(pid: int) -> None:
    """Drop an exited process's live gauges from the shared directory."""
    if multiprocess_mode():
        prometheus_multiprocess.mark_process_dead(pid)


class _ThisProcess(Collector):
    """The default registry's metrics, without registering anything in it."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()
