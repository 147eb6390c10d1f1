"""Signing a browser in with an API token; the session cookie, its checks and CSRF protection.

* **Sign in**: the token is entered once (``POST /dashboard/login``) and
  checked like a bearer token (``api.auth.Tokens``); the browser then holds a
  session cookie, never the token.  The cookie is Flask's signed session:
  ``HttpOnly``, ``SameSite=Strict``, ``Path=/dashboard`` (never sent to the
  JSON API, which takes bearer tokens only), ``Secure`` when the request came
  over HTTPS (or through a proxy that says ``X-Forwarded-Proto: https``), and
  it expires ``DASHBOARD_SESSION_SECONDS`` after sign-in: the browser drops
  it then, and the server refuses an older signature anyway.
* **Key**: with ``API_AUTH=required`` it is derived from every configured
  token with HMAC-SHA256 (``Tokens.secret``): the same in every process and
  replica that mounts the same Secret, unknowable without all its tokens, and
  no further secret to manage; adding or removing a token changes it, which
  signs every browser out.  A session also names its token's fingerprint
  and scope, checked on every request.  With ``API_AUTH=off`` (an open API,
  no sign-in) the key is a random one kept in Redis, shared by every process.
* **CSRF**: every POST must carry the session's random token (a hidden form
  field or ``X-CSRF-Token``) and must not come from another origin (its
  ``Origin`` and ``Sec-Fetch-Site`` headers, when the browser sends them,
  must say so).  ``SameSite=Strict`` keeps the cookie off cross-site
  requests as well; the token also covers another port of the same host,
  which is the same site.
* **Sign-out** clears the cookie and keeps the session's id in Redis until
  it would have expired, so a copy of the cookie is refused too.
* **Scopes**: a read-only token's session sees no action and any POST but
  sign-out is refused (403), whatever the page showed.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Request, current_app, request, session
from flask.sessions import SecureCookieSessionInterface

from api.auth import ANONYMOUS, FULL, READ, fingerprint, tokens
from workqueue.client import TaskClient

PREFIX = "/dashboard"
COOKIE = "workqueue_dashboard"
KEY_PURPOSE = b"dashboard-session"
OPEN_KEY = "workqueue-dashboard-key"  # in Redis, with API_AUTH=off
SIGNED_OUT_PREFIX = "workqueue-dashboard-signed-out-"  # sessions signed out before their expiry
CSRF_FIELD, CSRF_HEADER = "csrf_token", "X-CSRF-Token"


class DashboardSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened for ``/dashboard`` only, ``Secure`` over HTTPS."""

    def open_session(self, app: Flask, request: Request) -> Any:
        if not request.path.startswith(PREFIX):
            return self.null_session_class()  # the JSON API never reads a cookie
        if app.secret_key is None:
            try:
                app.secret_key = _open_key(app.extensions["workqueue"])
            except Exception:  # Redis down: the blueprint answers 503 on a null session
                return self.null_session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return request.is_secure or forwarded == "https"


def configure(app: Flask, lifetime: int) -> None:
    app.session_interface = DashboardSessions()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_PATH=PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=lifetime,
        SESSION_REFRESH_EACH_REQUEST=False,  # the expiry counts from sign-in
    )
    known = tokens(app)
    if known.required:
        app.secret_key = known.secret(KEY_PURPOSE)


def _open_key(client: TaskClient) -> str:
    """A random key shared through Redis by every process of an open API (made by the first one)."""
    redis, key = client._redis(), client.celery.backend.key_t(OPEN_KEY)
    redis.set(key, secrets.token_hex(32), nx=True)
    value = redis.get(key)
    return value.decode() if isinstance(value, bytes) else str(value)


def sign_in(token: str) -> bool:
    """Check ``token`` and start a session for it (a new CSRF token); False when it is no token."""
    scope = tokens(current_app).scope_of(token.strip()) if token else None
    if scope is None:
        return False
    _start(scope, fingerprint(token.strip()))
    return True


def _start(scope: str, who: str) -> None:
    session.clear()
    session.permanent = True
    session.update(scope=scope, who=who, at=time.time(), sid=secrets.token_urlsafe(16), csrf=secrets.token_urlsafe(32))


def sign_out() -> None:
    """Forget the session in the browser, and refuse its cookie from now on (a copy of it too)."""
    sid, at = session.get("sid"), session.get("at")
    if isinstance(sid, str) and isinstance(at, int | float):
        left = int(at + current_app.permanent_session_lifetime.total_seconds() - time.time()) + 1
        if left > 0:
            with _client()._unavailable("result backend"):
                _client()._redis().set(_signed_out_key(sid), "1", ex=left)
    session.clear()


def _signed_out_key(sid: str) -> Any:
    return _client().celery.backend.key_t(SIGNED_OUT_PREFIX + sid)


def _client() -> TaskClient:
    return current_app.extensions["workqueue"]


def current() -> dict[str, Any] | None:
    """The signed-in identity ``{"scope", "who"}``, or None (no session, expired, or its token is gone)."""
    known = tokens(current_app)
    if not known.required:
        if session.get("who") != ANONYMOUS:
            _start(FULL, ANONYMOUS)  # an open API: everyone may do everything, CSRF still applies
        return {"scope": FULL, "who": ANONYMOUS}
    scope, who, at = session.get("scope"), session.get("who"), session.get("at")
    if scope not in (FULL, READ) or not isinstance(at, int | float) or known.fingerprints.get(who) != scope:
        return None
    if time.time() - at > current_app.permanent_session_lifetime.total_seconds():
        return None
    sid = session.get("sid")
    with _client()._unavailable("result backend"):
        if not isinstance(sid, str) or _client()._redis().exists(_signed_out_key(sid)):
            return None  # signed out: a copy of the cookie is no good either
    return {"scope": scope, "who": who}


def csrf_token() -> str:
    """This session's CSRF token (made for a visitor who has not signed in yet, for the sign-in form)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def cross_site_refusal() -> str | None:
    """Why this POST must be refused as a possible cross-site request, or None."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request (Sec-Fetch-Site)"
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return "a request from another origin"
    expected = session.get("csrf")
    given = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not expected or not hmac.compare_digest(str(expected), given):
        return "a request without this session's CSRF token"
    return None
