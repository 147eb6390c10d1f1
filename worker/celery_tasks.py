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

from celery import Celery, Task, signals, states
from celery.exceptions import Ignore

from worker import metrics
from workqueue import result_store
from workqueue.catalogue import Catalogue, TaskContext, TaskDefinition
from workqueue.celery_app import settings_of
from workqueue.publisher import REPUBLISHED_HEADER
from workqueue.revocations import Revocations

logger = logging.getLogger(__name__)

DELIVERIES_PREFIX = "workqueue-deliveries-"


class DeliveryLimitExceeded(RuntimeError):
    """The message was delivered more often than TASK_MAX_DELIVERIES allows."""


class WorkqueueTask(Task):
    """Base task: what a second copy of a message is checked for before it runs.

    With ``acks_late`` + ``reject_on_worker_lost`` a message whose worker
    died goes back to the queue, flagged ``redelivered`` by RabbitMQ; the
    API publishes a task id a second time only when the first publish was
    never confirmed, flagged ``workqueue_republished``.  Such a copy is
    acknowledged without running when its task already reached a final
    state (SUCCESS, FAILURE or REVOKED: a worker died between storing it and
    acknowledging, or the unconfirmed first copy did land), and a
    redelivered one is failed past ``TASK_MAX_DELIVERIES`` (a task that kills
    its process every time would otherwise loop for ever).  Only such copies
    pay for these checks, so the normal path costs nothing.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        redelivered = bool((request.delivery_info or {}).get("redelivered"))
        if redelivered or getattr(request, REPUBLISHED_HEADER, None):
            self._skip_if_final()
            if redelivered:
                self._count_delivery()
        return super().__call__(*args, **kwargs)

    def _skip_if_final(self) -> None:
        meta = self.backend.get_task_meta(self.request.id, cache=False)
        if meta.get("status") in states.READY_STATES:
            logger.warning(
                "task %s already finished (%s): this copy is acknowledged, not run again",
                self.request.id,
                meta["status"],
            )
            raise Ignore()

    def _count_delivery(self) -> None:
        limit = settings_of(self.app).task_max_deliveries
        # The first delivery was not counted (it was not flagged redelivered).
        count = count_delivery(self.backend, self.request, settings_of(self.app).result_expires) + 1
        if count > limit:
            raise DeliveryLimitExceeded(
                f"task {self.request.id} was delivered {count} times (limit {limit}); "
                "its worker process died every time, so it is not run again"
            )


def count_delivery(backend: Any, request: Any, expires: int) -> int:
    """Count one more delivery of ``request``'s task: one atomic INCR (two workers never both count 2)."""
    key = backend.key_t(DELIVERIES_PREFIX + request.id)
    redis = getattr(backend, "client", None)
    if redis is None:  # the embedded file store (try-out mode): no atomic counter there
        count = int(backend.get(key) or 0) + 1
        backend.set(key, str(count))
        return count

    def incr() -> int:
        with redis.pipeline() as pipe:  # MULTI/EXEC: the counter never outlives the results
            pipe.incr(key)
            pipe.expire(key, expires)
            return int(pipe.execute()[0])

    # Redis down, full or read-only: wait for it (or requeue), never run uncounted.
    return backend.write_in_task(request, f"task {request.id}: delivery count", incr)


def register(app: Celery, tasks: Catalogue) -> None:
    """Register a Celery task on ``app`` for every definition in ``tasks``."""
    # Each running task's start, for its result store's time-limit deadline.
    signals.task_prerun.connect(result_store.note_start, weak=False, dispatch_uid="workqueue.note_start")
    for definition in tasks.values():
        app.task(name=definition.celery_name, base=WorkqueueTask, bind=True, **definition.options)(_runner(definition))


def _runner(definition: TaskDefinition) -> Callable[..., Any]:
    function = definition.function
    # The API always sends keyword arguments; positional ones come from code
    # that calls Celery directly (``add.delay(2, 3)``, ``send_task(..., args=...)``).
    if definition.takes_context:

        def run(self: Task, *args: Any, **kwargs: Any) -> Any:
            return function(_context(self), *args, **kwargs)

    else:

        def run(self: Task, *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

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
