"""Celery's per-task INFO lines, kept only with WORKER_LOG_TASKS=true.

A worker at INFO logs two lines per task: "Task ... received" (main
process) and "Task ... succeeded in ..." (pool process).  For short tasks
formatting and writing them was a quarter of the CPU a task costs
(bench/README.md, "Worker drain rate"), and at hundreds of tasks a second
they bury everything else in the log.  Without them the worker still logs
its start, connections, failures (ERROR), retries, revokes and shutdown at
INFO; what ran is in ``GET /tasks`` and the metrics.
"""

from __future__ import annotations

import logging

from celery.app import trace

from workqueue.settings import Settings

RECEIVED_LOGGER = "celery.worker.strategy"  # logs nothing but "received" at INFO


class _DropSucceeded(logging.Filter):
    """Drops Celery's success line only: the same logger says "retry" and "ignored"."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg is not trace.LOG_SUCCESS


def install(settings: Settings) -> None:
    if settings.worker_log_tasks:
        return
    # Celery checks this level once, when the consumer builds its task
    # strategies: no "received" line is even formatted.
    logging.getLogger(RECEIVED_LOGGER).setLevel(logging.WARNING)
    logging.getLogger(trace.logger.name).addFilter(_DropSucceeded())
