"""Tasks only the fault tests load: the worker gets ``TASK_MODULES=tests.integration.fault_tasks``.

They are never in the default catalogue and never in the production image.
The counted ones write their executions to the test's tally
(``testing/tally.py``), which is where the fault figures come from; a
``task_prerun`` receiver records every delivery of any task, with its
redelivered flag.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celery import signals

from testing import tally
from workqueue import catalogue
from workqueue.catalogue import TaskContext, task

MODULE = __name__


@signals.task_prerun.connect
def _delivered(task_id: str = "", task: Any = None, **_: Any) -> None:
    delivery = (task.request.delivery_info or {}) if task is not None else {}
    tally.record(tally.DELIVERY, task_id, bool(delivery.get("redelivered")))


def definitions() -> catalogue.Catalogue:
    """The catalogue with these tasks, for the tests' clients."""
    return catalogue.load([MODULE])


@task
def crash() -> None:
    """Kill the worker process running it (a poison message)."""
    os.kill(os.getpid(), signal.SIGKILL)


@task
def counted_add(context: TaskContext, x: int, y: int) -> int:
    """Return x + y, counting the execution."""
    tally.record(tally.START, context.id, context.redelivered)
    tally.record(tally.DONE, context.id, context.redelivered)
    return x + y


@task
def counted_sleep(context: TaskContext, seconds: float) -> float:
    """Sleep, counting the execution."""
    tally.record(tally.START, context.id, context.redelivered)
    time.sleep(seconds)
    tally.record(tally.DONE, context.id, context.redelivered)
    return seconds


@task
def fail(context: TaskContext) -> None:
    """Fail at once (a FAILURE to redeliver)."""
    tally.record(tally.START, context.id, context.redelivered)
    raise RuntimeError("failing on purpose")


@task
def done_then_crash(context: TaskContext) -> str:
    """Finish its work, then die before the result is stored: on its first delivery only.

    The negative control of the duplicate and redelivery figures: RabbitMQ
    redelivers it (its process died unacknowledged), the copy runs to its end
    again, so it counts one duplicate and one redelivery.
    """
    tally.record(tally.START, context.id, context.redelivered)
    tally.record(tally.DONE, context.id, context.redelivered)
    if not context.redelivered:
        os.kill(os.getpid(), signal.SIGKILL)
    return "done twice"


def service_env(tally_file: os.PathLike[str] | str) -> dict[str, str]:
    """Environment for ``run.sh worker``/``api`` that serves these tasks and tallies into ``tally_file``."""
    return {"TASK_MODULES": MODULE, tally.TALLY_ENV: str(tally_file)}
