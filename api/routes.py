"""HTTP routes: thin views over ``workqueue.client.TaskClient``."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

from celery import states
from flask import Blueprint, Response, current_app, jsonify, request, url_for

from api import metrics
from api.errors import ApiError, error_response
from api.limits import (
    DEFAULT_LIMIT,
    EVENTS_KEEPALIVE_SECONDS,
    LISTED_STATES,
    MAX_EVENTS_SECONDS,
    MAX_LIMIT,
    MAX_WAIT_SECONDS,
)
from workqueue.catalogue import TaskDefinition, ValidationFailed
from workqueue.client import (
    KEEPALIVE,
    DependencyUnavailable,
    IdempotencyConflict,
    PublishUnconfirmed,
    RetryRefused,
    TaskClient,
)
from workqueue.idempotency import MAX_KEY_LENGTH, RESERVED_PREFIXES, valid_key
from workqueue.index import BadCursor

bp = Blueprint("tasks", __name__)

SUBMISSION_KEYS = {"task", "args", "kwargs"}


def _client() -> TaskClient:
    return current_app.extensions["workqueue"]


def _json_body() -> Any:
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
    raw = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "invalid_json", "body is not valid JSON: nesting too deep") from None
    except ValueError as exc:
        # Python refuses integer literals of more than 4300 digits.
        detail = "an integer literal is too long" if "integer string conversion" in str(exc) else str(exc)[:200]
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {detail}") from None


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity, which are not JSON and which no
    # result could carry back.
    raise ValueError(f"{name} is not valid JSON")


def _parse_submission(body: Any) -> tuple[TaskDefinition, dict[str, Any]]:
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", 'body must be a JSON object like {"task": "add", "args": [2, 3]}')
    unknown = set(body) - SUBMISSION_KEYS
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown field(s) {sorted(unknown)[:5]}; allowed: task, args, kwargs")
    args = body.get("args", [])
    kwargs = body.get("kwargs", {})
    if not isinstance(args, list):
        raise ApiError(422, "invalid_request", "args must be a JSON array")
    if not isinstance(kwargs, dict):
        raise ApiError(422, "invalid_request", "kwargs must be a JSON object")
    try:
        definition = _client().catalogue.lookup(body.get("task"))
        return definition, definition.bind(args, kwargs)
    except ValidationFailed as exc:
        raise ApiError(422, exc.code, exc.message) from None


def _known_id(task_id: str) -> str:
    try:
        uuid.UUID(task_id)
    except ValueError:
        raise ApiError(404, "not_found", "no task with this id was submitted (ids are UUIDs)") from None
    return task_id


def _task_view(task_id: str, wait: float = 0.0) -> dict[str, Any]:
    _known_id(task_id)
    view = _client().wait(task_id, wait) if wait else _client().describe(task_id)
    if view is None:
        raise ApiError(404, "not_found", f"no task with id {task_id} was submitted (or its result expired)")
    return view


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not valid_key(key):
        raise ApiError(
            400, "invalid_idempotency_key", f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters"
        )
    if key is not None and key.startswith(RESERVED_PREFIXES):
        # The chart's CronJobs and batch Jobs submit under these: a client must
        # not be able to claim a future run's key with another request.
        raise ApiError(
            400,
            "reserved_idempotency_key",
            f"Idempotency-Keys starting with {' or '.join(RESERVED_PREFIXES)} are kept for scheduled and batch runs",
        )
    return key


@bp.post("/tasks")
def submit_task() -> tuple[Response, int, dict[str, str]]:
    key = _idempotency_key()
    definition, kwargs = _parse_submission(_json_body())
    client = _client()
    try:
        if key is None:
            task_id, replayed = client.submit(definition, kwargs), False
        else:
            task_id, replayed = client.submit_once(definition, kwargs, key)
    except (DependencyUnavailable, PublishUnconfirmed) as exc:
        metrics.ENQUEUE_FAILURES.labels(getattr(exc, "dependency", "broker")).inc()
        raise
    except IdempotencyConflict as exc:
        if exc.kind == "mismatch":
            # 409, like "in progress": the request is valid, the key's state conflicts with it.
            raise ApiError(
                409, "idempotency_key_reused", f"Idempotency-Key was used for another request (task {exc.task_id})"
            ) from None
        raise ApiError(409, "idempotency_key_in_use", "a request with this Idempotency-Key is in progress") from None
    location = url_for("tasks.get_task", task_id=task_id)
    if replayed:
        # The original task, as it stands now; 200, not 202: nothing new was accepted.
        view = client.describe(task_id) or {"id": task_id, "task": definition.name, "state": states.PENDING}
        return jsonify(view), 200, {"Location": location, "Idempotent-Replayed": "true"}
    metrics.task_sent(definition)
    return jsonify(id=task_id, task=definition.name, state=states.PENDING), 202, {"Location": location}


def _only_params(*allowed: str) -> None:
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise ApiError(422, "invalid_parameter", f"unknown query parameter(s) {shown}; allowed: {', '.join(allowed)}")


def _number_arg(name: str, default: float, low: float, high: float, kind: type = float) -> Any:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value != value or not low <= value <= high:  # value != value: NaN
        raise ApiError(422, "invalid_parameter", f"{name} must be a number from {low:g} to {high:g} (got {raw[:40]!r})")
    return value


@bp.get("/tasks/<task_id>")
def get_task(task_id: str) -> Response:
    # ?wait=N: answer as soon as the task is final, or with its state after N seconds.
    _only_params("wait")
    return jsonify(_task_view(task_id, _number_arg("wait", 0.0, 0, MAX_WAIT_SECONDS)))


@bp.get("/tasks/<task_id>/events")
def task_events(task_id: str) -> Response:
    """Server-Sent Events: the task's view at each state change, until a final state."""
    _only_params("timeout")
    _task_view(task_id)  # 404 before the stream starts
    return event_stream(task_id, _number_arg("timeout", MAX_EVENTS_SECONDS, 1, MAX_EVENTS_SECONDS))


def event_stream(task_id: str, seconds: float) -> Response:
    """The ``text/event-stream`` of a task's views (also the dashboard's)."""
    client = _client()
    # Taken now, so that no free slot (503) or no Redis (501) is answered before the stream starts.
    watch = client.watch(task_id, seconds, keepalive=EVENTS_KEEPALIVE_SECONDS)

    def stream() -> Any:
        with contextlib.closing(watch):
            for view in watch:
                if view is None:
                    return
                if view is KEEPALIVE:
                    # A comment line: a client that went away fails this write, which ends the stream.
                    yield ": keep-alive\n\n"
                    continue
                yield f"event: state\ndata: {json.dumps(view, separators=(',', ':'))}\n\n"

    # X-Accel-Buffering: nginx (and ingress-nginx) would otherwise hold events back in its buffer.
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    response = Response(stream(), mimetype="text/event-stream", headers=headers)
    response.call_on_close(watch.close)  # the slot is given back even if the stream never started
    return response


@bp.post("/tasks/<task_id>/retry")
def retry_task(task_id: str) -> tuple[Response, int, dict[str, str]]:
    _known_id(task_id)
    try:
        new_id = _client().retry(task_id)
    except RetryRefused as exc:
        status = 404 if exc.kind == "unknown" else 409
        raise ApiError(status, "not_found" if status == 404 else exc.kind, str(exc)) from None
    except ValidationFailed as exc:
        raise ApiError(422, exc.code, f"no longer valid against today's catalogue: {exc.message}") from None
    except IdempotencyConflict:  # a repeat of a retry whose publish was unconfirmed, while another republishes it
        raise ApiError(409, "retry_in_progress", f"task {task_id} is being retried by another request") from None
    client = _client()
    view = client.describe(new_id)
    # The new task's name is its record's; without a view (Redis lost it at
    # once) the original's record names the same task, or the answer goes without.
    name = view["task"] if view else (client.record(task_id) or {}).get("task")
    if name in client.catalogue:
        metrics.task_sent(client.catalogue[name])
    view = view or {"id": new_id, "task": name, "state": states.PENDING, "retry_of": task_id}
    return jsonify(view), 202, {"Location": url_for("tasks.get_task", task_id=new_id)}


@bp.delete("/tasks/<task_id>")
def revoke_task(task_id: str) -> tuple[Response, int] | Response:
    view = _task_view(task_id)
    if view["state"] in states.READY_STATES:
        return error_response(409, "already_finished", f"task {task_id} already finished ({view['state']})")
    _client().revoke(task_id)
    view["revoke_requested"] = True
    return jsonify(view), 202


@bp.get("/tasks")
def list_tasks() -> Response:
    """Submitted tasks, newest first: ?state=&task=&cursor=&limit= (see TaskClient.list_tasks)."""
    _only_params("state", "task", "cursor", "limit")
    client = _client()
    state = request.args.get("state")
    if state is not None and state not in LISTED_STATES:
        raise ApiError(422, "invalid_parameter", f"state must be one of {', '.join(LISTED_STATES)}")
    task = request.args.get("task")
    if task is not None:
        try:
            task = client.catalogue.lookup(task).name
        except ValidationFailed as exc:
            raise ApiError(422, "invalid_parameter", exc.message) from None
    limit = _number_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT, int)
    try:
        tasks, next_cursor = client.list_tasks(state, task, request.args.get("cursor"), limit)
    except BadCursor as exc:
        raise ApiError(400, "invalid_cursor", str(exc)) from None
    return jsonify(tasks=tasks, next_cursor=next_cursor)


@bp.get("/catalogue")
def catalogue() -> Response:
    return jsonify(tasks=[definition.describe() for definition in _client().catalogue.values()])


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    # Shared by concurrent callers and kept a second (TaskClient.status): a
    # loop of /readyz costs the servers one check a second per process.
    checks, queues = _client().status()
    ready = all(value == "ok" for value in checks.values())
    # Queues nobody consumes are shown, not held against the API's readiness:
    # their tasks wait safely until a worker pool for them starts.
    return jsonify(status="ready" if ready else "unready", checks=checks, queues=queues), 200 if ready else 503


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    return metrics.render()


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return Response(current_app.extensions["workqueue-openapi"], mimetype="application/json")
