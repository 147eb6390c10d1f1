"""Tasks sent to Celery directly get a submission record and index entries, so every task is listed.

The API records a task before it publishes it (``TaskClient.submit``) and
stamps the message with ``workqueue_submitted_at``.  Application code that
calls Celery itself (``send_task("workqueue.add", ...)``, ``add.delay(...)``)
writes no record: such a task could be read by id but was never listed, nor
retried.  Here the worker records it when it starts, with its arguments
(named after the definition's parameters when they fit it, so a retry
resubmits them), the time it was first seen, ``"via": "celery"`` and the
trace id of its ``traceparent`` header: one ``SET NX`` and the index's
``ZADD NX``es, in one round trip.  NX keeps a record the API wrote (a
retried attempt, a copy) untouched.

Only messages without the API's stamp pay for it; API submissions, the
normal path, cost one attribute read.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from celery import Celery, signals

from workqueue import index, tracing
from workqueue.catalogue import Catalogue, ValidationFailed
from workqueue.celery_app import settings_of
from workqueue.records import RECORD_PREFIX, record_json
from workqueue.result_store import SUBMITTED_HEADER

logger = logging.getLogger(__name__)


def record_for(definitions: Catalogue, name: str, request: Any, now: float) -> dict[str, Any]:
    """The submission record of a task that reached the worker without one."""
    args, kwargs = list(request.args or ()), dict(request.kwargs or {})
    record: dict[str, Any] = {
        "task": name,
        "submitted_at": None,  # unknown: a Celery message carries no time of sending
        "seen_at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
        "via": "celery",
    }
    trace_id = tracing.trace_id_of(getattr(request, "traceparent", None))
    if trace_id:
        record["trace_id"] = trace_id
    try:
        record["kwargs"] = definitions[name].bind(args, kwargs)
    except (ValidationFailed, KeyError) as exc:
        # Kept as sent; a retry then says why it cannot resubmit them.
        record["invalid"] = str(getattr(exc, "message", exc))[:200]
        record["kwargs"], record["args"] = kwargs, args
    return record


def install(app: Celery, definitions: Catalogue) -> None:
    """Record tasks without the API's stamp before they run (a ``task_prerun`` receiver)."""
    names = {definition.celery_name: definition.name for definition in definitions.values()}
    expires = settings_of(app).result_expires

    def record_unsubmitted(task: Any = None, task_id: str = "", **_: Any) -> None:
        request = getattr(task, "request", None)
        if request is None or getattr(request, SUBMITTED_HEADER, None) is not None:
            return  # the API recorded it: the normal path stops here
        name = names.get(getattr(task, "name", None))
        backend = task.backend
        redis = getattr(backend, "client", None)
        if name is None or redis is None:
            return  # not one of ours, or the embedded store (no index there)
        now = time.time()
        record = record_json(record_for(definitions, name, request, now))
        tasks_index = index.TaskIndex(backend, expires)

        def write() -> None:
            with redis.pipeline(transaction=False) as pipe:
                pipe.set(backend.key_t(RECORD_PREFIX + task_id), record, ex=expires, nx=True)
                tasks_index.add(pipe, task_id, name, now, only_new=True)
                pipe.execute()

        # As essential as its STARTED state: waited for while Redis is down.
        backend.write_in_task(request, f"task {task_id}: record", write)

    signals.task_prerun.connect(record_unsubmitted, weak=False, dispatch_uid="workqueue.record_unsubmitted")
