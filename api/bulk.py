"""Bulk actions over HTTP: ``POST /tasks/bulk/retry``, ``POST /tasks/bulk/revoke``, ``GET /tasks/bulk/actions``.

Thin views over ``workqueue.bulk.BulkActions`` (bounded, idempotent,
recorded); under ``/tasks`` so the bearer tokens and their scopes guard them
like every other route that changes tasks.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from api.auth import caller
from api.errors import ApiError
from api.routes import _client, _json_body, _number_arg, _only_params
from workqueue.bulk import DEFAULT_LIMIT, MAX_LIMIT, BulkActions
from workqueue.catalogue import ValidationFailed
from workqueue.index import BadCursor

bp = Blueprint("bulk", __name__)

RETRY_FIELDS = {"task", "since", "limit", "cursor"}
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC).timestamp()
LATEST = dt.datetime.max.replace(microsecond=0, tzinfo=dt.UTC).timestamp()
LEAP_SECOND = re.compile(r"(T\d\d:\d\d:)60")
LOG_LIMIT = 200


def bulk_actions() -> BulkActions:
    actions = current_app.extensions.get("workqueue-bulk")
    if actions is None:
        actions = current_app.extensions["workqueue-bulk"] = BulkActions(_client())
    return actions


def parse_since(raw: Any, required: bool) -> float | None:
    """An ISO 8601 time (UTC when it names no zone) as epoch seconds; 422 otherwise."""
    if raw is None and not required:
        return None
    try:
        if not isinstance(raw, str) or len(raw) > 40:
            raise ValueError
        # RFC 3339 allows a lower-case t and z, and a leap second, which Python does not read.
        text = LEAP_SECOND.sub(r"\g<1>59", raw.strip().upper())
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(422, "invalid_since", 'since must be an ISO 8601 time, e.g. "2026-12-06T10:00:00Z"') from None
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    try:
        return when.astimezone(dt.UTC).timestamp()  # in UTC, as it is stored and shown
    except OverflowError:
        # A valid time whose UTC date is out of Python's range (0001-01-01T00:00+00:01,
        # 9999-12-31T23:59-00:01): the nearest time that has one selects the same tasks.
        return EARLIEST if when.year == 1 else LATEST


def task_name(raw: Any) -> str:
    try:
        return _client().catalogue.lookup(raw).name
    except ValidationFailed as exc:
        raise ApiError(422, exc.code, exc.message) from None


def _body() -> dict[str, Any]:
    body = _json_body()
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", 'body must be a JSON object like {"task": "flaky", "since": "..."}')
    unknown = set(body) - RETRY_FIELDS
    if unknown:
        raise ApiError(
            422, "invalid_request", f"unknown field(s) {sorted(unknown)[:5]}; allowed: task, since, limit, cursor"
        )
    limit = body.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, float) and limit.is_integer():
        limit = body["limit"] = int(limit)  # 100.0 is an integer to JSON Schema
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ApiError(422, "invalid_request", f"limit must be an integer from 1 to {MAX_LIMIT}")
    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API gave out")
    return body


def _answer(run: Any) -> Response:
    try:
        return jsonify(run())
    except BadCursor as exc:
        raise ApiError(400, "invalid_cursor", str(exc)) from None


@bp.post("/tasks/bulk/retry")
def bulk_retry() -> Response:
    body = _body()
    task, since = task_name(body.get("task")), parse_since(body.get("since"), required=True)
    assert since is not None
    return _answer(
        lambda: bulk_actions().retry_failed(task, since, caller(), body.get("cursor"), body.get("limit", DEFAULT_LIMIT))
    )


@bp.post("/tasks/bulk/revoke")
def bulk_revoke() -> Response:
    body = _body()
    task, since = task_name(body.get("task")), parse_since(body.get("since"), required=False)
    return _answer(
        lambda: bulk_actions().revoke_queued(
            task, caller(), since, body.get("cursor"), body.get("limit", DEFAULT_LIMIT)
        )
    )


@bp.get("/tasks/bulk/actions")
def bulk_log() -> Response:
    _only_params("limit")
    limit = _number_arg("limit", 50, 1, LOG_LIMIT, int)
    return jsonify(actions=bulk_actions().log(limit))
