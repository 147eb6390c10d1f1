"""Prometheus metrics of a worker pod, served on WORKER_METRICS_PORT (0 = off).

Tasks run in prefork pool processes, so the counters are written in those
processes through prometheus-client's multiprocess mode
(``workqueue.prometheus``) and merged by the HTTP server in the main process.  Queue depth is read from
the broker at scrape time (a passive queue declare), not guessed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from celery import Celery, bootsteps, signals
from celery.worker import state as worker_state
from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker import fork_safety
from workqueue import catalogue
from workqueue.celery_app import DEFAULT_QUEUE, settings_of
from workqueue.client import queue_status
from workqueue.prometheus import scrape_registry

logger = logging.getLogger(__name__)

RUNTIME_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600)
# One vocabulary: celery-exporter's names below for everything it has a name
# for (what the chart's dashboard and alerts read); workqueue_* only for what
# it has not (the queue wait, the result store's memory).
QUEUE_WAIT = Histogram(
    "workqueue_task_queue_wait_seconds",
    "From submission (the API's clock) to the start of the task (the worker's clock)",
    ["name", "queue_name"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800),
)

# The names and labels of celery-exporter (danihodovic/celery-exporter), so
# its dashboards and alerts work unchanged; counted here from signals
# instead of from task events, which cost throughput.
EXPORTER_LABELS = ["name", "hostname", "queue_name"]
RECEIVED = Counter("celery_task_received", "Sent when the worker receives a task.", EXPORTER_LABELS)
STARTED = Counter("celery_task_started", "Sent just before the worker executes the task.", EXPORTER_LABELS)
SUCCEEDED = Counter("celery_task_succeeded", "Sent if the task executed successfully.", EXPORTER_LABELS)
FAILED = Counter(
    "celery_task_failed", "Sent if the execution of the task failed.", ["name", "hostname", "exception", "queue_name"]
)
RETRIED = Counter("celery_task_retried", "Sent if the task failed, but will be retried in the future.", EXPORTER_LABELS)
REVOKED = Counter("celery_task_revoked", "Sent if the task has been revoked.", EXPORTER_LABELS)
CELERY_RUNTIME = Histogram(
    "celery_task_runtime", "Histogram of task runtime measurements.", EXPORTER_LABELS, buckets=RUNTIME_BUCKETS
)

_started: dict[str, float] = {}


def exporter_labels(name: str | None, request: Any) -> dict[str, str]:
    """celery-exporter's labels: the Celery task name, the worker's host, the queue it came from."""
    hostname = getattr(request, "hostname", None) or ""
    delivery = getattr(request, "delivery_info", None) or {}
    return {
        "name": name or "unknown",
        "hostname": hostname.split("@", 1)[-1],
        "queue_name": delivery.get("routing_key") or DEFAULT_QUEUE,
    }


@signals.task_received.connect
def _on_received(request: Any = None, **kwargs: Any) -> None:
    RECEIVED.labels(**exporter_labels(request.name, request)).inc()


@signals.task_prerun.connect
def _on_prerun(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    _started[task_id] = time.perf_counter()
    labels = exporter_labels(task.name, task.request)
    STARTED.labels(**labels).inc()
    submitted = getattr(task.request, "workqueue_submitted_at", None)  # a header the publisher sets
    if isinstance(submitted, int | float) and task.request.retries == 0:
        QUEUE_WAIT.labels(labels["name"], labels["queue_name"]).observe(max(0.0, time.time() - submitted))


@signals.task_postrun.connect
def _on_postrun(task_id: str = "", task: Any = None, state: str = "", **kwargs: Any) -> None:
    started = _started.pop(task_id, None)
    runtime = None if started is None else time.perf_counter() - started
    if state == "SUCCESS":
        labels = exporter_labels(task.name, task.request)
        SUCCEEDED.labels(**labels).inc()
        if runtime is not None:
            CELERY_RUNTIME.labels(**labels).observe(runtime)


@signals.task_failure.connect
def _on_failure(sender: Any = None, exception: BaseException | None = None, **kwargs: Any) -> None:
    labels = exporter_labels(sender.name, sender.request)
    FAILED.labels(exception=type(exception).__name__, **labels).inc()


@signals.task_retry.connect
def _on_retry(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    RETRIED.labels(**exporter_labels(sender.name, request)).inc()


@signals.task_revoked.connect
def _on_revoked(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    # ``request`` is the task's Context, which has no name: the task is the sender.
    count_revoked(getattr(sender, "name", None), request)


def count_revoked(name: str | None, request: Any) -> None:
    """A revoke: discarded on receipt (Celery's signal), or stopped while running (ours)."""
    REVOKED.labels(**exporter_labels(name, request)).inc()


class WorkerStateCollector(Collector):
    """``celery_worker_up`` and ``celery_worker_tasks_active`` of this worker, at scrape time."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        host = (self.worker.hostname or "").split("@", 1)[-1]
        files = getattr(self.worker, "probe_files", None)
        up = GaugeMetricFamily(
            "celery_worker_up", "Indicates if a worker is connected and consuming.", labels=["hostname"]
        )
        up.add_metric([host], 1.0 if files is not None and files.connected else 0.0)
        active = GaugeMetricFamily(
            "celery_worker_tasks_active", "The number of tasks the worker is currently processing", labels=["hostname"]
        )
        active.add_metric([host], float(len(worker_state.active_requests)))
        yield up
        yield active


class QueueDepthCollector(Collector):
    """Ready messages and consumers of every task queue, read from the broker at scrape time."""

    def __init__(self, app: Celery, queues: list[str], guard: fork_safety.ForkGuard) -> None:
        self.app = app
        self.queues = queues
        self.lock = threading.Lock()
        self.guard = guard  # scrapes run in the server's threads: a fork waits for their connects

    def collect(self) -> Iterator[GaugeMetricFamily]:
        exporter = GaugeMetricFamily(
            "celery_queue_length", "The number of message in broker queue.", labels=["queue_name"]
        )
        consumers = GaugeMetricFamily(
            "celery_active_consumer_count", "The number of active consumer in broker queue.", labels=["queue_name"]
        )
        try:
            with self.lock, self.guard.io(), self.app.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
                for queue in self.queues:
                    depth, consuming = queue_status(connection, queue)
                    exporter.add_metric([queue], depth)
                    consumers.add_metric([queue], consuming)
        except Exception as exc:  # a scrape must not fail because the broker did
            logger.debug("queue depth unavailable: %s", exc)
        yield exporter
        yield consumers


class ResultStoreMemoryCollector(Collector):
    """The result store's memory and its maxmemory, read from Redis (INFO memory) at scrape time.

    Redis refuses every write once it reaches maxmemory (the chart's noeviction):
    the alert WorkqueueResultStoreNearlyFull reads these before that happens.
    """

    def __init__(self, app: Celery, guard: fork_safety.ForkGuard) -> None:
        self.app = app
        self.guard = guard

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily("workqueue_result_store_used_memory_bytes", "Memory Redis uses (INFO used_memory)")
        limit = GaugeMetricFamily(
            "workqueue_result_store_max_memory_bytes", "Redis' maxmemory (0: no limit), past which it refuses writes"
        )
        client = getattr(self.app.backend, "client", None)  # the embedded file store has none
        if client is not None:
            try:
                with self.guard.io():
                    memory = client.info("memory")
                used.add_metric([], float(memory["used_memory"]))
                limit.add_metric([], float(memory["maxmemory"]))
            except Exception as exc:  # a scrape must not fail because Redis did
                logger.debug("result store memory unavailable: %s", exc)
        yield used
        yield limit


class MetricsServerStep(bootsteps.StartStopStep):
    """Serve /metrics from the main process once the pool exists (children never inherit it)."""

    label = "metrics server"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.port = settings_of(worker.app).worker_metrics_port
        self.server: Any = None

    def start(self, worker: Any) -> None:
        if not self.port:
            return
        registry = scrape_registry()
        settings = settings_of(worker.app)
        queues = sorted({*settings.worker_queues, *catalogue.for_settings(settings).queues})
        guard = fork_safety.guard()
        registry.register(QueueDepthCollector(worker.app, queues, guard))
        registry.register(WorkerStateCollector(worker))
        registry.register(ResultStoreMemoryCollector(worker.app, guard))
        try:
            self.server, _ = start_http_server(self.port, registry=registry)
        except OSError as exc:  # metrics must never stop the worker
            logger.error("cannot serve metrics on port %s: %s", self.port, exc)

    def stop(self, worker: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def install(app: Celery) -> None:
    app.steps["worker"].add(MetricsServerStep)
