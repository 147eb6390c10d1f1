"""Prometheus metrics of a worker pod, served on WORKER_METRICS_PORT (0 = off).

Tasks run in prefork pool processes, so the counters are written in those
processes through prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set and emptied by ``run.sh worker``) and
merged by the HTTP server in the main process.  Queue depth is read from
the broker at scrape time (a passive queue declare), not guessed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from celery import Celery, bootsteps, signals
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.celery_app import DEFAULT_QUEUE

logger = logging.getLogger(__name__)

TASKS = Counter("workqueue_worker_tasks_total", "Task executions by task name and outcome", ["task", "outcome"])
RUNTIME = Histogram(
    "workqueue_worker_task_runtime_seconds",
    "Task runtime by task name",
    ["task"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600),
)

_started: dict[str, float] = {}


def _name(task: Any) -> str:
    name = getattr(task, "name", None) or "unknown"
    return name.removeprefix("workqueue.")


@signals.task_prerun.connect
def _on_prerun(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    _started[task_id] = time.perf_counter()
    TASKS.labels(_name(task), "started").inc()


@signals.task_postrun.connect
def _on_postrun(task_id: str = "", task: Any = None, state: str = "", **kwargs: Any) -> None:
    started = _started.pop(task_id, None)
    if started is not None:
        RUNTIME.labels(_name(task)).observe(time.perf_counter() - started)
    if state in ("SUCCESS", "FAILURE"):
        TASKS.labels(_name(task), state.lower()).inc()


@signals.task_retry.connect
def _on_retry(sender: Any = None, **kwargs: Any) -> None:
    TASKS.labels(_name(sender), "retried").inc()


class QueueDepthCollector(Collector):
    """``workqueue_queue_messages``: ready messages in the task queue, read at scrape time."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("workqueue_queue_messages", "Messages ready in the queue", labels=["queue"])
        try:
            with self.lock, self.app.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
                depth = connection.default_channel.queue_declare(DEFAULT_QUEUE, passive=True).message_count
            family.add_metric([DEFAULT_QUEUE], depth)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the broker did
            logger.debug("queue depth unavailable: %s", exc)
        yield family


class MetricsServerStep(bootsteps.StartStopStep):
    """Serve /metrics from the main process once the pool exists (children never inherit it)."""

    label = "metrics server"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.port = worker.app.conf.workqueue_settings.worker_metrics_port
        self.server: Any = None

    def start(self, worker: Any) -> None:
        if not self.port:
            return
        registry = CollectorRegistry()
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            prometheus_multiprocess.MultiProcessCollector(registry)
        else:
            registry.register(_DefaultCollectors())
        registry.register(QueueDepthCollector(worker.app))
        try:
            self.server, _ = start_http_server(self.port, registry=registry)
        except OSError as exc:  # metrics must never stop the worker
            logger.error("cannot serve metrics on port %s: %s", self.port, exc)

    def stop(self, worker: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


class _DefaultCollectors(Collector):
    """Without multiprocess mode (solo pool, tests): this process's own metrics."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client import REGISTRY  # noqa: PLC0415

        yield from REGISTRY.collect()


def install(app: Celery) -> None:
    app.steps["worker"].add(MetricsServerStep)
