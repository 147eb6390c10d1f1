"""Consumer step: revokes stored in the result store reach this worker too.

Celery keeps revoked ids in memory, filled by broadcasts while the worker
listens.  A worker that starts (or reconnects) after a revoke loads the
stored ids (``workqueue.revocations``) when its consumer starts, and again
every ``RELOAD_SECONDS`` because Celery forgets an id after three hours;
Celery then discards such a task on receipt and records it REVOKED.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps
from celery.worker import state as worker_state

from workqueue.celery_app import settings_of
from workqueue.revocations import Revocations

logger = logging.getLogger(__name__)

RELOAD_SECONDS = 600.0


class RevokedLoaderStep(bootsteps.StartStopStep):
    label = "stored revokes"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self._timer_entry: Any = None

    def start(self, consumer: Any) -> None:
        settings = settings_of(consumer.app)
        revocations = Revocations(consumer.app.backend, settings.result_expires)

        def load() -> None:
            try:
                ids = revocations.current()
            except Exception as exc:  # the result store down must not stop consuming
                logger.warning("stored revokes not loaded: %s", exc)
                return
            for task_id in ids:
                worker_state.revoked.add(task_id)

        load()
        self._timer_entry = consumer.timer.call_repeatedly(RELOAD_SECONDS, load)

    def stop(self, consumer: Any) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None

    shutdown = stop


def install(app: Celery) -> None:
    app.steps["consumer"].add(RevokedLoaderStep)
