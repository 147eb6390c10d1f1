"""Everything known about one task, for the dashboard's task page.

``TaskClient.describe`` is the public view (``GET /tasks/<id>``); a person
looking at one task also wants its arguments, traceback, start time, worker,
queue and trace id, which are in the submission record and the stored state
already.  All of it comes from the same one MGET as ``describe``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from celery import states

from workqueue.client import TaskClient


def task_details(client: TaskClient, task_id: str) -> dict[str, Any] | None:
    """The task's view plus its arguments and stored details; None for an id never submitted."""
    backend = client.celery.backend
    keys = [client._record_key(task_id), backend.get_key_for_task(task_id), client._retried_key(task_id)]
    with client._unavailable("result backend"):
        raw_record, raw_meta, raw_retried = backend.mget(keys)
    view = client._view(task_id, raw_record, raw_meta, raw_retried)
    if view is None:
        return None
    record = json.loads(raw_record) if raw_record else {}
    meta = backend.decode(raw_meta) if raw_meta else {}
    details: dict[str, Any] = {
        **view,
        "kwargs": record.get("kwargs"),
        "args": record.get("args"),
        "via": record.get("via") or ("api" if record else None),
        "seen_at": record.get("seen_at"),
        "trace_id": record.get("trace_id"),
        "invalid": record.get("invalid"),
        "traceback": meta.get("traceback") if view["state"] in (states.FAILURE, states.RETRY) else None,
        "started_at": meta.get("started_at"),
        "worker": meta.get("worker"),
        "queue": meta.get("queue"),
        "queue_wait_seconds": None,
        "runtime_seconds": None,
    }
    started, submitted, done = (_parse(details.get(k)) for k in ("started_at", "submitted_at", "completed_at"))
    # The start is the last attempt's: a wait is only the first attempt's.
    if started and submitted and not view["retries"]:
        details["queue_wait_seconds"] = max(0.0, (started - submitted).total_seconds())
    if started and done:
        details["runtime_seconds"] = max(0.0, (done - started).total_seconds())
    if view["state"] not in states.READY_STATES:
        with client._unavailable("result backend"):
            details["revoke_requested"] = task_id in client.revocations
    return details


def _parse(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
