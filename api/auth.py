"""Bearer tokens for ``/tasks*`` (``API_TOKENS``); probes, metrics and the OpenAPI document stay open.

Tokens are compared in constant time (``hmac.compare_digest``, against
every configured token so the time does not say which one is closest) and
never logged: gunicorn's access log has no request headers.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from flask import Flask, Response, request

from api.errors import error_response

PROTECTED_PREFIX = "/tasks"
CHALLENGE = 'Bearer realm="workqueue"'


def install(app: Flask, tokens: Sequence[str]) -> None:
    """Require one of ``tokens`` on ``/tasks*``; nothing to do when there are none."""
    if not tokens:
        return
    expected = [token.encode() for token in tokens]

    @app.before_request
    def require_token() -> Response | None:
        if not request.path.startswith(PROTECTED_PREFIX):
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        presented = given.strip().encode("utf-8", "replace")
        matched = False
        for token in expected:
            matched |= hmac.compare_digest(presented, token)
        if scheme.lower() == "bearer" and presented and matched:
            return None
        response = error_response(401, "unauthorized", "send Authorization: Bearer <token> (one of API_TOKENS)")
        invalid = ', error="invalid_token"' if given else ""
        response.headers["WWW-Authenticate"] = CHALLENGE + invalid
        return response
