"""Celery tasks made from the catalogue's definitions (``workqueue/tasks.py``).

Every definition becomes one Celery task named ``workqueue.<name>`` on the
``WorkqueueTask`` base, with the definition's own options (retries).  The
definitions stay free of Celery: a function that asks for a
``TaskContext`` gets one built from the Celery request here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, Task, states
from celery.exceptions import Ignore

from worker import metrics
from workqueue.catalogue import Catalogue, TaskContext, TaskDefinition
from workqueue.celery_app import settings_of
from workqueue.revocations import Revocations

logger = logging.getLogger(__name__)


class DeliveryLimitExceeded(RuntimeError):
    """The message was delivered more often than TASK_MAX_DELIVERIES allows."""


class WorkqueueTask(Task):
    """Base task: what a redelivered message is checked for before it runs.

    With ``acks_late`` + ``reject_on_worker_lost`` a message whose worker
    died goes back to the queue, flagged ``redelivered`` by RabbitMQ.  Such a
    copy is acknowledged without running when its task already succeeded (a
    worker died between storing the result and acknowledging), and failed
    past ``TASK_MAX_DELIVERIES`` (a task that kills its process every time
    would otherwise loop forever).  The API never publishes one id twice, so
    a redelivery is the only way a second copy arises; only redelivered
    messages pay for these checks, so the normal path costs nothing.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        delivery = self.request.delivery_info or {}
        if delivery.get("redelivered"):
            self._skip_if_succeeded()
            self._count_delivery()
        return super().__call__(*args, **kwargs)

    def _skip_if_succeeded(self) -> None:
        meta = self.backend.get_task_meta(self.request.id, cache=False)
        if meta.get("status") == states.SUCCESS:
            logger.warning("task %s already succeeded: redelivered copy acknowledged, not run again", self.request.id)
            raise Ignore()

    def _count_delivery(self) -> None:
        limit = settings_of(self.app).task_max_deliveries
        key = f"workqueue-deliveries-{self.request.id}"
        raw = self.backend.get(key)
        # The first delivery was not counted (it was not flagged redelivered).
        count = (int(raw) if raw else 1) + 1
        self.backend.set(key, str(count))
        if count > limit:
            raise DeliveryLimitExceeded(
                f"task {self.request.id} was delivered {count} times (limit {limit}); "
                "its worker process died every time, so it is not run again"
            )


def register(app: Celery, tasks: Catalogue) -> None:
    """Register a Celery task on ``app`` for every definition in ``tasks``."""
    for definition in tasks.values():
        app.task(name=definition.celery_name, base=WorkqueueTask, bind=True, **definition.options)(_runner(definition))


def _runner(definition: TaskDefinition) -> Callable[..., Any]:
    function = definition.function
    if definition.takes_context:

        def run(self: Task, **kwargs: Any) -> Any:
            return function(_context(self), **kwargs)

    else:

        def run(self: Task, **kwargs: Any) -> Any:
            return function(**kwargs)

    run.__name__ = run.__qualname__ = definition.name
    run.__module__ = function.__module__
    run.__doc__ = definition.summary
    return run


def _revoked(task: Task) -> bool:
    """Whether this running task was revoked; a result store that does not answer means no."""
    revocations = Revocations(task.backend, settings_of(task.app).result_expires)
    try:
        return task.request.id in revocations
    except (*getattr(task.backend, "connection_errors", ()), OSError) as exc:  # it must outlive a Redis outage
        logger.warning("revocation check skipped: %s", exc)
        return False


def _context(task: Task) -> TaskContext:
    request = task.request
    delivery = request.delivery_info or {}

    def report_progress(**meta: Any) -> None:
        # A revoke reaches a running task here: it stops at its next report.
        if _revoked(task):
            logger.warning("task %s revoked while running: stopping at its progress report", request.id)
            task.backend.mark_as_revoked(request.id, "revoked while running", request=request)
            metrics.count_revoked(task.name, request)
            raise Ignore()
        task.update_state(state="PROGRESS", meta=meta)

    return TaskContext(
        id=request.id,
        retries=request.retries,
        hostname=request.hostname,
        args=tuple(request.args or ()),
        kwargs=dict(request.kwargs or {}),
        routing_key=delivery.get("routing_key"),
        redelivered=bool(delivery.get("redelivered")),
        report_progress=report_progress,
    )
