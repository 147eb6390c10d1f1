"""Bearer tokens for ``/tasks*``, with two scopes; probes, metrics, the catalogue and the document stay open.

``API_AUTH=required`` (the default): every ``/tasks*`` request needs
``Authorization: Bearer <token>``.  A token of ``API_TOKENS`` may do
anything there; a token of ``API_READ_TOKENS`` may only read (GET, HEAD,
OPTIONS) and gets ``403 insufficient_scope`` on anything that changes state.
The settings refuse to start the API without a token in that mode
(``Settings.check_api_access``); ``API_AUTH=off`` is the explicit choice of
an open API.

Tokens are compared in constant time: the SHA-256 of what the client sent
against the SHA-256 of every configured token (``hmac.compare_digest``, all
of them every time, so neither the time nor an early exit says which one is
closest, nor how long they are).  They are never logged: gunicorn's access
log has no request headers.  Who did something is told by a token's
fingerprint (``fingerprint``), never by the token.  The dashboard
(``api/dashboard/``) signs a browser in with the same tokens.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, Response, current_app, g, request

from api.errors import error_response
from workqueue.settings import Settings

PROTECTED_PREFIX = "/tasks"
CHALLENGE = 'Bearer realm="workqueue"'
FULL, READ = "full", "read"
# What a read-only token may do: nothing that changes state.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ANONYMOUS = "anonymous (API_AUTH=off)"
EXTENSION = "workqueue-tokens"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def fingerprint(token: str) -> str:
    """Who holds ``token``, without it: ``sha256:`` and the first 12 hex digits of its SHA-256.

    ``printf %s "$TOKEN" | sha256sum | cut -c1-12`` gives the same digits, so
    an operator can tell which token of the Secret it was.
    """
    return "sha256:" + _digest(token).hex()[:12]


class Tokens:
    """The configured tokens and their scopes (``None`` when ``API_AUTH=off``)."""

    def __init__(self, settings: Settings) -> None:
        self.required = settings.api_auth != "off"
        self._known = [(_digest(token), FULL, token) for token in settings.api_tokens]
        self._known += [(_digest(token), READ, token) for token in settings.api_read_tokens]
        self.fingerprints = {fingerprint(token): scope for _, scope, token in self._known}

    def scope_of(self, presented: str) -> str | None:
        """FULL, READ or None, in constant time over every configured token."""
        given, scope = _digest(presented), None
        for digest, its_scope, _ in self._known:
            if hmac.compare_digest(given, digest):
                scope = its_scope
        return scope

    def secret(self, purpose: bytes) -> bytes:
        """A key for ``purpose`` derived from every configured token (HMAC-SHA256).

        The same in every process and replica that holds the same Secret, and
        unknowable without all of its tokens; it changes when a token is added
        or removed.
        """
        material = b"\n".join(sorted(digest for digest, _, _ in self._known))
        return hmac.new(material, b"workqueue:" + purpose, hashlib.sha256).digest()


def tokens(app: Flask | None = None) -> Tokens:
    return (app or current_app).extensions[EXTENSION]


def install(app: Flask, settings: Settings) -> None:
    """Require a token on ``/tasks*`` unless ``API_AUTH=off``; refuse to run with none."""
    settings.check_api_access()
    known = app.extensions[EXTENSION] = Tokens(settings)
    if settings.api_auth == "off":
        return

    @app.before_request
    def require_token() -> Response | None:
        if not request.path.startswith(PROTECTED_PREFIX):
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        presented = given.strip()
        scope = known.scope_of(presented) if scheme.lower() == "bearer" and presented else None
        if scope == FULL or (scope == READ and request.method in READ_METHODS):
            g.caller = f"token {fingerprint(presented)}"
            return None
        if scope == READ:
            response = error_response(
                403,
                "insufficient_scope",
                f"this token may only read (GET); {request.method[:10]} needs a token of API_TOKENS",
            )
            response.headers["WWW-Authenticate"] = CHALLENGE + ', error="insufficient_scope"'
            return response
        response = error_response(401, "unauthorized", _why_unauthorized(scheme, presented))
        invalid = ', error="invalid_token"' if given else ""
        response.headers["WWW-Authenticate"] = CHALLENGE + invalid
        return response


def _why_unauthorized(scheme: str, presented: str) -> str:
    """What to fix: no token at all, another scheme, or a token that is not one of ours (never which is closest)."""
    how = "send Authorization: Bearer <token> (one of API_TOKENS or API_READ_TOKENS)"
    if not scheme:
        return f"no token: {how}"
    if scheme.lower() != "bearer":
        return f"the Authorization header is not a bearer token: {how}"
    if not presented:
        return f"the Authorization header holds no token: {how}"
    return "this bearer token is not accepted: it is none of API_TOKENS or API_READ_TOKENS (mistyped, or rotated out?)"


def caller() -> str:
    """Who makes the current request: a token's fingerprint, or anonymous on an open API."""
    return g.get("caller") or ANONYMOUS
