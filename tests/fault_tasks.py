"""Tasks only the fault tests load (``run.sh worker -I tests.fault_tasks``).

They are never in the HTTP catalogue and never in the production image.
"""

from __future__ import annotations

import os
import signal

from celery import shared_task

from worker.catalogue import TaskSpec
from worker.tasks import WorkqueueTask

# Submitted through the same path as catalogued tasks, but not catalogued.
CRASH = TaskSpec("crash", "Kill the worker process running it (a poison message).", (), required=0)


@shared_task(name=CRASH.celery_name, base=WorkqueueTask)
def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
