"""The Celery worker process: ``celery -A worker.main worker`` (``run.sh worker``).

``create_worker_app`` first loads what the worker's threads would import
while the pool forks and makes forks wait for their network I/O
(``fork_safety``), builds the app with the shared factory, registers a
Celery task for every catalogued definition and installs the worker's own
bootsteps: probe files, bounded graceful shutdown, a pruned timer heap, metrics, stored revokes,
its heartbeat key for the dashboard;
Celery's per-task log lines only when asked for.  ``app`` is
built on import because that is what ``celery -A`` loads; this is the one
module that does so.
"""

from __future__ import annotations

from celery import Celery

from worker import celery_tasks, direct, fork_safety, metrics, presence, probes, revoked, shutdown, task_log, timer_heap
from workqueue import catalogue, tracing
from workqueue.celery_app import create_celery
from workqueue.settings import Settings


def create_worker_app(settings: Settings | None = None) -> Celery:
    fork_safety.settle_imports()  # before any thread or pool process exists
    fork_safety.guard()  # every fork from now on waits for the threads' network I/O
    settings = settings or Settings.from_env()
    app = create_celery(settings, role="worker")
    app.conf.worker_consumer = "worker.consumer:Consumer"  # Celery's, without native delayed delivery
    definitions = catalogue.for_settings(settings)
    celery_tasks.register(app, definitions)
    direct.install(app, definitions)  # tasks sent to Celery directly get a record too
    probes.install(app)
    presence.install(app)
    shutdown.install(app)
    timer_heap.install(app)  # cancelled time-limit timers freed within seconds
    revoked.install(app)
    metrics.install(app)
    task_log.install(settings)
    tracing.instrument_celery(settings)  # OTEL_EXPORTER_OTLP_ENDPOINT set only
    return app


app = create_worker_app()
