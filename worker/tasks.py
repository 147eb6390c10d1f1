"""Celery tasks: thin wrappers over ``worker.functions``.

Defined with ``@shared_task`` so they bind to whichever app
``create_celery`` builds (no app is created at import time).  Names are
``workqueue.<catalogue name>``; only names in ``worker.catalogue`` can be
submitted from outside.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Task, shared_task

from worker import functions

logger = logging.getLogger(__name__)


class DeliveryLimitExceeded(RuntimeError):
    """The message was delivered more often than TASK_MAX_DELIVERIES allows."""


class WorkqueueTask(Task):
    """Base task: refuses to run a message redelivered too many times.

    With ``acks_late`` + ``reject_on_worker_lost`` a message whose worker
    process died goes back to the queue.  A task that kills its process
    every time (segfault, OOM) would loop forever; counting redeliveries in
    the result store and failing the task past the cap stops that.  Only
    redelivered messages pay for the count, so the normal path costs nothing.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        delivery = self.request.delivery_info or {}
        if delivery.get("redelivered"):
            self._count_delivery()
        return super().__call__(*args, **kwargs)

    def _count_delivery(self) -> None:
        limit = self.app.conf.workqueue_settings.task_max_deliveries
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


def _task(**options: Any) -> Any:
    name = options.pop("name")
    return shared_task(name=f"workqueue.{name}", base=WorkqueueTask, **options)


@_task(name="add")
def add(x: float, y: float) -> float:
    return functions.add(x, y)


@_task(name="mul")
def mul(x: float, y: float) -> float:
    return functions.mul(x, y)


@_task(name="xsum")
def xsum(numbers: list[float]) -> float:
    return functions.xsum(numbers)


@_task(name="dump_context", bind=True)
def dump_context(self: Task, x: Any, y: Any) -> dict[str, Any]:
    request = self.request
    # The book's task: show what the worker knows about this execution.
    logger.info("Executing task id %s, args: %r kwargs: %r", request.id, request.args, request.kwargs)
    delivery = request.delivery_info or {}
    return {
        "id": request.id,
        "args": list(request.args or ()),
        "kwargs": dict(request.kwargs or {}),
        "hostname": request.hostname,
        "pid": os.getpid(),
        "retries": request.retries,
        "routing_key": delivery.get("routing_key"),
        "redelivered": bool(delivery.get("redelivered")),
    }


@_task(name="pi")
def pi(digits: int) -> str:
    return functions.pi_digits(digits)


@_task(name="sleep", bind=True)
def sleep(self: Task, seconds: float) -> dict[str, float]:
    def report(elapsed: float, total: float) -> None:
        self.update_state(state="PROGRESS", meta={"elapsed": elapsed, "total": total})

    return {"slept": functions.sleep_with_progress(seconds, report)}


@_task(
    name="flaky",
    bind=True,
    autoretry_for=(functions.TransientError,),
    max_retries=3,
    retry_backoff=1,  # 1 s, 2 s, 4 s ...
    retry_backoff_max=60,
    # No jitter: Celery's full jitter can draw a 0 s countdown, and then the
    # next attempt may finish before this one has stored its RETRY state,
    # which then overwrites the final SUCCESS/FAILURE (seen in CI).
    retry_jitter=False,
)
def flaky(self: Task, failures: int) -> str:
    return functions.flaky(failures, self.request.retries)
