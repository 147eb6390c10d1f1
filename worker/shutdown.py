"""A bound on graceful shutdown: SIGTERM never waits longer than WORKER_SHUTDOWN_TIMEOUT.

Celery's SIGTERM is a warm shutdown: it stops consuming and waits for every
in-flight task, however long.  Kubernetes sends SIGKILL after
``terminationGracePeriodSeconds``; with acks_late nothing is lost even then,
but the pod dies uncleanly and a long task burns the whole grace period.

This worker step arms a timer on SIGTERM.  Tasks that finish within
``WORKER_SHUTDOWN_TIMEOUT`` are acked as usual; when the timer fires, the
worker turns the shutdown cold (the SIGQUIT path of Celery 5.5+): the
remaining tasks are cancelled and, being unacked, go back to the queue for
another worker, and the process still exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_shutting_down

from workqueue.celery_app import settings_of

logger = logging.getLogger(__name__)


class BoundedShutdownStep(bootsteps.Step):
    label = "bounded shutdown"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.timeout = settings_of(worker.app).worker_shutdown_timeout
        self.timer: threading.Timer | None = None
        worker_shutting_down.connect(self.on_shutting_down, weak=False)

    def on_shutting_down(self, sig: str = "", how: str = "", **kwargs: Any) -> None:
        if how != "Warm" or self.timer is not None:
            return
        self.timer = threading.Timer(self.timeout, self.force)
        self.timer.daemon = True
        self.timer.start()

    def force(self) -> None:
        logger.warning(
            "tasks still running %.0f s after SIGTERM (WORKER_SHUTDOWN_TIMEOUT): returning them to the queue",
            self.timeout,
        )
        os.kill(os.getpid(), signal.SIGQUIT)


def install(app: Celery) -> None:
    app.steps["worker"].add(BoundedShutdownStep)
