"""HTTP routes: thin views over ``worker.submission``."""

from __future__ import annotations

import json
import uuid
from typing import Any

from celery import Celery, states
from flask import Blueprint, Response, current_app, jsonify, request, url_for

from api import metrics, openapi
from api.errors import ApiError, error_response
from worker.catalogue import CATALOGUE, ValidationFailed, lookup
from worker.submission import DependencyUnavailable, describe, submit

bp = Blueprint("tasks", __name__)

SUBMISSION_KEYS = {"task", "args", "kwargs"}


def _celery() -> Celery:
    return current_app.extensions["celery"]


def _errors() -> tuple[type[BaseException], ...]:
    return current_app.extensions["dependency_errors"]


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


def _parse_submission(body: Any) -> tuple[str, dict[str, Any]]:
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
        spec = lookup(body.get("task"))
        return spec.name, spec.bind(args, kwargs)
    except ValidationFailed as exc:
        raise ApiError(422, exc.code, exc.message) from None


def _task_view(task_id: str) -> dict[str, Any]:
    try:
        uuid.UUID(task_id)
    except ValueError:
        raise ApiError(404, "not_found", "no task with this id was submitted (ids are UUIDs)") from None
    view = describe(_celery(), task_id, _errors())
    if view is None:
        raise ApiError(404, "not_found", f"no task with id {task_id} was submitted (or its result expired)")
    return view


@bp.post("/tasks")
def submit_task() -> tuple[Response, int, dict[str, str]]:
    name, kwargs = _parse_submission(_json_body())
    try:
        task_id = submit(_celery(), CATALOGUE[name], kwargs, _errors())
    except DependencyUnavailable as exc:
        metrics.ENQUEUE_FAILURES.labels(exc.dependency).inc()
        raise
    metrics.SUBMITTED.labels(name).inc()
    location = url_for("tasks.get_task", task_id=task_id)
    return jsonify(id=task_id, task=name, state=states.PENDING), 202, {"Location": location}


@bp.get("/tasks/<task_id>")
def get_task(task_id: str) -> Response:
    return jsonify(_task_view(task_id))


@bp.delete("/tasks/<task_id>")
def revoke_task(task_id: str) -> tuple[Response, int] | Response:
    view = _task_view(task_id)
    if view["state"] in states.READY_STATES:
        return error_response(409, "already_finished", f"task {task_id} already finished ({view['state']})")
    try:
        # Broadcast to the running workers: a task not yet started is
        # discarded; one already running finishes (prefork cannot stop it
        # safely without killing its process).
        _celery().control.revoke(task_id)
    except _errors() as exc:
        raise DependencyUnavailable("broker", exc) from exc
    view["revoke_requested"] = True
    return jsonify(view), 202


@bp.get("/tasks")
def catalogue() -> Response:
    return jsonify(
        tasks=[
            {
                "name": spec.name,
                "summary": spec.summary,
                "params": [name for name, _ in spec.params],
                "schema": spec.schema,
            }
            for spec in CATALOGUE.values()
        ]
    )


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    checks = {"broker": _check_broker(), "result_backend": _check_backend()}
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "unready", checks=checks), 200 if ready else 503


def _check_broker() -> str:
    """One connection attempt, bounded by broker_connection_timeout."""
    try:
        with _celery().connection_for_write() as connection:
            connection.connect()
    except _errors() as exc:
        return f"unavailable: {type(exc).__name__}"
    return "ok"


def _check_backend() -> str:
    backend = _celery().backend
    try:
        backend.get(backend.key_t("workqueue-readyz"))  # any round trip; the key need not exist
    except _errors() as exc:
        return f"unavailable: {type(exc).__name__}"
    return "ok"


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    return metrics.render()


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(openapi.document())
