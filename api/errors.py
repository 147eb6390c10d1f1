"""Every error leaves the API as ``{"error": {"code", "message"}}``.

Client mistakes are 4xx with a message that says what to fix; an outage of
the broker or the result store, a broker that blocks publishers, a full or
read-only Redis, is 503 with ``Retry-After`` and a code that says which
(nothing was queued); a message the broker did not confirm in time is 504
carrying the task id and the way to make sure it runs (repeat the request
with the idempotency key it names); anything else is a 500 that is logged
and does not leak internals.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from workqueue.client import DependencyUnavailable, PublishUnconfirmed, RedisRequired, TooManyWaits

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2

# DependencyUnavailable.reason -> (code, message): nothing was queued in any of these.
UNAVAILABLE = {
    "down": ("unavailable", "{dependency} is unavailable; nothing was queued, retry later"),
    "blocked": (
        "broker_blocked",
        "the broker refuses new messages (a memory or disk alarm); nothing was queued, retry later",
    ),
    "full": ("result_store_full", "the result store (Redis) is full; nothing was queued, retry later"),
    "read_only": (
        "result_store_read_only",
        "the result store (Redis) is read-only (a replica, e.g. during a failover); nothing was queued, retry later",
    ),
}


class ApiError(Exception):
    """A client error with a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> Response:
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    return response


def _code_for(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_")


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"body larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        response = error_response(exc.code or 500, _code_for(exc), message)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(DependencyUnavailable)
    def unavailable(exc: DependencyUnavailable) -> Response:
        logger.warning("%s", exc)
        code, message = UNAVAILABLE.get(exc.reason, UNAVAILABLE["down"])
        response = error_response(503, code, message.format(dependency=exc.dependency))
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(TooManyWaits)
    def too_many_waits(exc: TooManyWaits) -> Response:
        response = error_response(503, "too_many_waits", f"{exc}; retry later, or poll without ?wait=")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(RedisRequired)
    def needs_redis(exc: RedisRequired) -> Response:
        return error_response(501, "not_implemented", str(exc))

    @app.errorhandler(PublishUnconfirmed)
    def unconfirmed(exc: PublishUnconfirmed) -> Response:
        logger.warning("%s", exc)
        error = {"code": "publish_unconfirmed", "task_id": exc.task_id}
        if exc.retry_of:
            how = f"repeat POST /tasks/{exc.retry_of}/retry"
        else:
            how = f"repeat the same request with the header Idempotency-Key: {exc.idempotency_key}"
            error["idempotency_key"] = exc.idempotency_key
        error["message"] = (
            f"the broker did not confirm task {exc.task_id} in time: it may or may not be queued. "
            f"To make sure it runs (once), {how} until it is answered 200 or 202"
        )
        response = jsonify(error=error)
        response.status_code = 504
        response.headers["Location"] = f"/tasks/{exc.task_id}"
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the server log")
