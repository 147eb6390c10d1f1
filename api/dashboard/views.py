"""The dashboard's pages: tasks, one task, queues and throughput, workers, bulk actions, sign-in.

Views stay thin: they call ``TaskClient`` and the small readers of
``workqueue/`` and render a template.  A page polled for live updates is
asked for with ``?fragment=1`` and answers only the part that changes.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

from celery import states
from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import NullSession
from markupsafe import Markup

import api.dashboard.charts as charts
import api.dashboard.session as access
from api.auth import FULL, caller
from api.bulk import bulk_actions
from api.limits import LISTED_STATES, MAX_EVENTS_SECONDS
from api.routes import _client, event_stream
from workqueue import index, throughput, workers
from workqueue.bulk import DEFAULT_LIMIT, MAX_LIMIT
from workqueue.catalogue import ValidationFailed
from workqueue.client import DependencyUnavailable, PublishUnconfirmed, RetryRefused
from workqueue.details import task_details
from workqueue.index import BadCursor

bp = Blueprint("dashboard", __name__, url_prefix=access.PREFIX, template_folder="templates", static_folder="static")

PAGE_SIZE = 50
PUBLIC = {"dashboard.login", "dashboard.login_post"}
STYLESHEET = Path(__file__).parent / "static" / "dashboard.css"
FINAL = frozenset(states.READY_STATES)


# -- access -------------------------------------------------------------------


@bp.before_request
def gate() -> Any:
    g.csp_nonce = secrets.token_urlsafe(16)
    if getattr(_client().celery.backend, "client", None) is None:
        message = "The dashboard needs Redis as the result store: the embedded try-out store keeps no index."
        return _page("error.html", 501, message=message)
    if isinstance(session._get_current_object(), NullSession):  # type: ignore[attr-defined]
        return _page("error.html", 503, message="The result store (Redis) is unavailable; try again shortly.")
    try:
        g.identity = access.current()
    except DependencyUnavailable:
        return _page("error.html", 503, message="The result store (Redis) is unavailable; try again shortly.")
    if request.method == "POST":
        refusal = access.cross_site_refusal()
        if refusal:
            return _page("error.html", 403, message=f"Refused: {refusal}. Reload the page and try again.")
    if request.endpoint in PUBLIC:
        return None
    if g.identity is None:
        if request.method == "GET" and not request.args.get("fragment") and request.endpoint != "dashboard.events":
            return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
        return _page("error.html", 401, message="Sign in again: this session has ended.")
    g.caller = f"dashboard {g.identity['who']}"  # who bulk actions are recorded as
    if request.method == "POST" and g.identity["scope"] != FULL and request.endpoint != "dashboard.logout":
        return _page("error.html", 403, message="This token may only read: actions need a token of API_TOKENS.")
    return None


@bp.after_request
def headers(response: Response) -> Response:
    nonce = g.get("csp_nonce", "")
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
        f"style-src 'self' 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint == "dashboard.static":
        response.headers["Cache-Control"] = "private, max-age=300"
    else:
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_template_global()
def csrf_token() -> str:
    return access.csrf_token()


@bp.get("/login")
def login() -> Any:
    if not current_app.extensions["workqueue-tokens"].required:
        return redirect(url_for("dashboard.tasks"))
    return _login_page(200)


@bp.post("/login")
def login_post() -> Any:
    if not access.sign_in(request.form.get("token", "")):
        time.sleep(0.2)  # a wrong guess costs the guesser a little; tokens are long enough anyway
        return _login_page(401, error="That is not a token of this API.")
    target = request.args.get("next") or ""
    return redirect(target if _inside(target) else url_for("dashboard.tasks"))


@bp.post("/logout")
def logout() -> Any:
    access.sign_out()
    return redirect(url_for("dashboard.login"))


def _login_page(status: int, error: str | None = None) -> Any:
    css = Markup(STYLESHEET.read_text())  # inline: nothing else is served before sign-in
    return _page("login.html", status, css=css, error=error, next=request.args.get("next", ""))


def _inside(target: str) -> bool:
    return target.startswith(access.PREFIX + "/") and not target.startswith("//") and "\\" not in target


# -- tasks ----------------------------------------------------------------------


@bp.get("/")
def tasks() -> Any:
    client = _client()
    searched = request.args.get("id", "").strip()
    if searched:
        task_id = _uuid(searched.rsplit("/", 1)[-1])
        if task_id and client.describe(task_id) is not None:
            return redirect(url_for("dashboard.task", task_id=task_id))
        flash(f"No task with id {searched[:60]!r} (ids are UUIDs; expired tasks are gone).", "error")
    state = request.args.get("state") or None
    name = request.args.get("task") or None
    state = state if state in LISTED_STATES else None
    name = name if name in client.catalogue else None
    cursor = request.args.get("cursor") or None
    try:
        rows, next_cursor = client.list_tasks(state, name, cursor, PAGE_SIZE)
    except BadCursor:
        rows, next_cursor, cursor = *client.list_tasks(state, name, None, PAGE_SIZE), None
    template = "_rows.html" if request.args.get("fragment") else "tasks.html"
    filters = {k: v for k, v in (("state", state), ("task", name)) if v}
    return _page(
        template,
        200,
        rows=rows,
        next_cursor=next_cursor,
        cursor=cursor,
        filters=filters,
        states=LISTED_STATES,
        names=sorted(client.catalogue),
    )


@bp.get("/tasks/<task_id>")
def task(task_id: str) -> Any:
    details = task_details(_client(), task_id) if _uuid(task_id) == task_id else None
    if details is None:
        return _page("error.html", 404, message=f"No task with id {task_id[:60]!r} was submitted (or it expired).")
    live = details["state"] not in FINAL
    return _page(
        "task.html",
        200,
        t=details,
        live=live,
        can_retry=details["state"] in (states.FAILURE, states.REVOKED) and not details.get("retried_by"),
        can_revoke=live and not details.get("revoke_requested"),
    )


@bp.get("/tasks/<task_id>/events")
def events(task_id: str) -> Any:
    if _uuid(task_id) != task_id or _client().describe(task_id) is None:
        return _page("error.html", 404, message="No such task.")
    return event_stream(task_id, MAX_EVENTS_SECONDS)


@bp.post("/tasks/<task_id>/retry")
def retry(task_id: str) -> Any:
    if _uuid(task_id) != task_id:
        return _page("error.html", 404, message="No such task.")
    try:
        new_id = _client().retry(task_id)
        flash(Markup('Retried as <a href="{}">{}</a>.').format(url_for("dashboard.task", task_id=new_id), new_id))
    except RetryRefused as exc:
        flash(f"Not retried: {exc}", "error")
    except ValidationFailed as exc:
        flash(f"Not retried: its arguments are no longer valid ({exc.message})", "error")
    except (DependencyUnavailable, PublishUnconfirmed) as exc:
        flash(f"Not retried for now ({type(exc).__name__}); retrying again is safe.", "error")
    return redirect(url_for("dashboard.task", task_id=task_id))


@bp.post("/tasks/<task_id>/revoke")
def revoke(task_id: str) -> Any:
    client = _client()
    view = client.describe(task_id) if _uuid(task_id) == task_id else None
    if view is None:
        return _page("error.html", 404, message="No such task.")
    if view["state"] in FINAL:
        flash(f"Not revoked: it already finished ({view['state']}).", "error")
    else:
        try:
            client.revoke(task_id)
            flash("Revoked: a queued task is dropped, a running one stops at its next progress report.")
        except DependencyUnavailable as exc:
            flash(f"Not revoked for now ({exc.dependency} unavailable); try again.", "error")
    return redirect(url_for("dashboard.task", task_id=task_id))


# -- queues, workers, bulk actions --------------------------------------------


@bp.get("/queues")
def queues() -> Any:
    client = _client()
    live = workers.Presence(client.celery.backend).live()
    names = sorted({*client.catalogue.queues, *(q for w in live for q in w.get("queues", []))})
    series, waits = throughput.Throughput(client.celery.backend, client.celery.backend.key_t(index.ALL)).read()
    rows = []
    for name in names:
        try:
            depth, consumers = client.queue_status(name)
        except DependencyUnavailable:
            depth = consumers = None
        rows.append({"name": name, "depth": depth, "consumers": consumers, "wait": waits.get(name)})
    template = "_queues.html" if request.args.get("fragment") else "queues.html"
    return _page(template, 200, rows=rows, chart=charts.throughput(series), series=series)


@bp.get("/workers")
def workers_page() -> Any:
    live = workers.Presence(_client().celery.backend).live()
    template = "_workers.html" if request.args.get("fragment") else "workers.html"
    expiry = workers.expiry(_client().settings.worker_presence_interval)
    return _page(template, 200, workers=live, now=time.time(), expiry=expiry)


@bp.get("/bulk")
def bulk() -> Any:
    return _bulk_page(200)


@bp.post("/bulk/retry")
def bulk_retry() -> Any:
    return _bulk("retry")


@bp.post("/bulk/revoke")
def bulk_revoke() -> Any:
    return _bulk("revoke")


def _bulk(action: str) -> Any:
    form = request.form
    name = form.get("task", "")
    if name not in _client().catalogue:
        return _bulk_page(422, error="Choose a task.")
    raw_since = form.get("since") or None
    try:
        since = dt.datetime.fromisoformat(raw_since).replace(tzinfo=dt.UTC).timestamp() if raw_since else None
    except ValueError:
        return _bulk_page(422, error="The time is not one (use YYYY-MM-DDTHH:MM, UTC).")
    if action == "retry" and since is None:
        return _bulk_page(422, error="Retry needs a time: failed tasks submitted since then are retried.")
    try:
        limit = min(max(int(form.get("limit") or DEFAULT_LIMIT), 1), MAX_LIMIT)
        cursor = form.get("cursor") or None
        actions = bulk_actions()
        if action == "retry":
            assert since is not None
            result = actions.retry_failed(name, since, caller(), cursor, limit)
        else:
            result = actions.revoke_queued(name, caller(), since, cursor, limit)
    except (ValueError, BadCursor):
        return _bulk_page(422, error="Bad limit or cursor.")
    except (DependencyUnavailable, PublishUnconfirmed) as exc:
        return _bulk_page(503, error=f"Stopped: {exc}. Repeating the action is safe (it is idempotent).")
    return _bulk_page(
        200, result=result, form={"action": action, "task": name, "since": raw_since or "", "limit": limit}
    )


def _bulk_page(status: int, **context: Any) -> Any:
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return _page(
        "bulk.html",
        status,
        names=sorted(_client().catalogue),
        log=bulk_actions().log(30),
        default_since=an_hour_ago.strftime("%Y-%m-%dT%H:%M"),
        max_limit=MAX_LIMIT,
        default_limit=DEFAULT_LIMIT,
        **context,
    )


# -- helpers --------------------------------------------------------------------


def _page(template: str, status: int, **context: Any) -> tuple[str, int]:
    return render_template(f"dashboard/{template}", identity=g.get("identity"), **context), status


def _uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        return None


@bp.app_template_filter("when")
def when(value: Any) -> str:
    """An ISO time or epoch seconds as ``2026-12-06 19:40:01 UTC``."""
    if value is None or value == "":
        return "–"
    try:
        moment = (
            dt.datetime.fromtimestamp(value, dt.UTC)
            if isinstance(value, int | float)
            else dt.datetime.fromisoformat(value)
        )
    except (ValueError, TypeError, OverflowError):
        return str(value)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("seconds")
def seconds(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


@bp.app_template_filter("pretty")
def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@bp.app_template_filter("fraction")
def fraction(progress: Any) -> float | None:
    """How far a task's progress is, 0..1, from ``{"elapsed"|"current"|"done", "total"}``; None if unknown."""
    if not isinstance(progress, dict):
        return None
    total = progress.get("total")
    done = next((progress[k] for k in ("elapsed", "current", "done") if k in progress), None)
    if not isinstance(total, int | float) or not isinstance(done, int | float) or total <= 0:
        return None
    return max(0.0, min(1.0, done / total))
