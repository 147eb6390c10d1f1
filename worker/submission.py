"""Submitting tasks and reading their state: shared by the API and submit_tasks.py.

A submission writes a small record (task name, submission time) to the
result store *before* publishing, then publishes with a publisher confirm.
The record is what lets ``GET /tasks/<id>`` tell "pending" from "never
submitted" (Celery itself reports PENDING for any unknown id).  Writing it
first means a fast worker can never finish the task before its record
exists.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from celery import Celery, states
from kombu.exceptions import OperationalError

from worker.catalogue import CATALOGUE, TaskSpec

RECORD_PREFIX = "workqueue-submitted-"


class DependencyUnavailable(RuntimeError):
    """The broker or the result store did not answer in time."""

    def __init__(self, dependency: str, cause: BaseException) -> None:
        super().__init__(f"{dependency} unavailable: {type(cause).__name__}: {cause}")
        self.dependency = dependency


def dependency_errors(app: Celery) -> tuple[type[BaseException], ...]:
    """Exceptions that mean "a server is down or slow", not "a bug here"."""
    with app.connection_for_write() as connection:
        broker = tuple(connection.connection_errors) + tuple(connection.channel_errors)
    backend = tuple(getattr(app.backend, "connection_errors", ()))
    return (OperationalError, OSError, socket.timeout, *broker, *backend)


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _record_key(app: Celery, task_id: str) -> Any:
    return app.backend.key_t(RECORD_PREFIX + task_id)


def submit(app: Celery, spec: TaskSpec, kwargs: Mapping[str, Any], errors: tuple[type[BaseException], ...]) -> str:
    """Record and publish one task; return its id once the broker confirmed it.

    ``kwargs`` must already be validated (``TaskSpec.bind``).  Raises
    ``DependencyUnavailable`` when the result store or the broker is down.
    """
    task_id = str(uuid.uuid4())
    record = json.dumps({"task": spec.name, "submitted_at": _utcnow()})
    key = _record_key(app, task_id)
    try:
        _store_record(app.backend, key, record)
    except errors as exc:
        raise DependencyUnavailable("result backend", exc) from exc
    timeout = app.conf.workqueue_settings.api_dependency_timeout
    try:
        app.send_task(spec.celery_name, kwargs=dict(kwargs), task_id=task_id, confirm_timeout=timeout)
    except errors as exc:
        _forget(app, key, errors)
        raise DependencyUnavailable("broker", exc) from exc
    return task_id


def _store_record(backend: Any, key: Any, record: str) -> None:
    """One plain SET with expiry on Redis.

    Celery's ``backend.set`` wraps it in MULTI/EXEC with a PUBLISH for result
    listeners, which no one listens to for this key: a third of the CPU a
    submission costs.  Other backends (the embedded file store) use it as is.
    """
    client = getattr(backend, "client", None)
    if client is not None and backend.expires:
        client.set(key, record, ex=int(backend.expires))
    else:
        backend.set(key, record)


def _forget(app: Celery, key: Any, errors: tuple[type[BaseException], ...]) -> None:
    try:
        app.backend.delete(key)
    except errors:
        pass  # the record expires with the results; the client never saw this id


def describe(app: Celery, task_id: str, errors: tuple[type[BaseException], ...]) -> dict[str, Any] | None:
    """The public view of a task, or None when the id was never submitted."""
    backend = app.backend
    try:
        raw_record, raw_meta = list(backend.mget([_record_key(app, task_id), backend.get_key_for_task(task_id)]))
    except errors as exc:
        raise DependencyUnavailable("result backend", exc) from exc
    if raw_record is None and raw_meta is None:
        return None
    record = json.loads(raw_record) if raw_record else {}
    meta = backend.decode(raw_meta) if raw_meta else {"status": states.PENDING}
    state = meta.get("status", states.PENDING)
    view: dict[str, Any] = {
        "id": task_id,
        "task": record.get("task") or _public_name(meta.get("name")),
        "state": state,
        "retries": meta.get("retries") or 0,
        "submitted_at": record.get("submitted_at"),
        "completed_at": meta.get("date_done") if state in states.READY_STATES else None,
    }
    result = meta.get("result")
    if state == states.SUCCESS:
        view["result"] = result
    elif state in (states.FAILURE, states.RETRY, states.REVOKED) and isinstance(result, dict):
        view["error"] = {"type": result.get("exc_type"), "message": _exc_message(result)}
    elif state == "PROGRESS":
        view["progress"] = result
    return view


def _public_name(celery_name: str | None) -> str | None:
    if celery_name and celery_name.startswith("workqueue."):
        name = celery_name.removeprefix("workqueue.")
        return name if name in CATALOGUE else celery_name
    return celery_name


def _exc_message(result: Mapping[str, Any]) -> str:
    message = result.get("exc_message")
    if isinstance(message, list | tuple):
        return " ".join(str(part) for part in message)
    return str(message or "")
