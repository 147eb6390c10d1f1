"""The dashboard's access decisions: sign-in, the session cookie, CSRF, scopes, sign-out, and the pages' headers.

Sessions are Flask's signed cookies; the two things they keep in Redis (the
key of an open API, the ids of sessions signed out) live in the stand-in's
dict here.  The same rules against a real Redis, and the pages that read
the index, heartbeats and counters, are tests/integration/test_dashboard.py.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from urllib.parse import unquote

import pytest
from celery import states

from api.auth import fingerprint
from api.dashboard import session as access
from api.dashboard import views
from tests.answers import csrf_of, sign_in

FULL, READ = "full-token-" + uuid.uuid4().hex, "read-token-" + uuid.uuid4().hex


@pytest.fixture
def secured(make_app):
    """The API with auth on: a full and a read-only token."""
    return make_app(api_auth="required", api_tokens=(FULL,), api_read_tokens=(READ,))


def dashboard_rules(app) -> list[str]:
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/dashboard")]
    assert len(rules) > 10  # every page, action, stream and the static files
    return [r.rule for r in rules if "GET" in r.methods] + [r.rule for r in rules if "POST" in r.methods]


def test_nothing_of_the_dashboard_is_reachable_without_a_session(secured, task_client):
    client = secured.test_client()
    for rule in dashboard_rules(secured):
        path = rule.replace("<task_id>", str(uuid.uuid4())).replace("<path:filename>", "dashboard.js")
        for method in ("GET", "POST"):
            with client.open(path, method=method) as answer:
                page = answer.get_data(as_text=True)
            if rule == "/dashboard/login":
                assert answer.status_code in (200, 403), (method, path)  # the form; a POST without CSRF is refused
                continue
            assert answer.status_code in (302, 401, 403, 405), (method, path, answer.status_code)
            if answer.status_code == 302:
                assert unquote(answer.headers["Location"]) == "/dashboard/login?next=" + path
            assert "sha256:" not in page
    assert [call for call, _ in task_client.calls] == [], "nothing was read for a visitor"


def test_a_page_asked_for_by_script_or_a_stream_is_401_not_a_redirect(secured):
    client = secured.test_client()
    assert client.get("/dashboard/?fragment=1").status_code == 401
    assert client.get(f"/dashboard/tasks/{uuid.uuid4()}/events").status_code == 401
    assert client.get("/dashboard/queues").status_code == 302


def test_signing_in_sets_a_cookie_that_is_httponly_samesite_strict_scoped_and_expires(secured):
    client = secured.test_client()
    form = client.get("/dashboard/login").get_data(as_text=True)
    answer = client.post("/dashboard/login", data={"token": FULL, "csrf_token": csrf_of(form)})
    assert answer.status_code == 302 and answer.headers["Location"] == "/dashboard/"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{access.COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert "Expires=" in cookie and "Secure" not in cookie  # plain HTTP here
    assert FULL not in cookie
    assert client.get("/dashboard/").status_code == 200


def test_the_cookie_is_secure_behind_a_proxy_that_says_https(secured):
    client = secured.test_client()
    https = {"X-Forwarded-Proto": "https"}
    form = client.get("/dashboard/login", headers=https).get_data(as_text=True)
    answer = client.post("/dashboard/login", data={"token": FULL, "csrf_token": csrf_of(form)}, headers=https)
    assert "Secure" in answer.headers["Set-Cookie"]


def test_a_wrong_token_signs_nobody_in(secured):
    client = secured.test_client()
    form = client.get("/dashboard/login").get_data(as_text=True)
    answer = client.post("/dashboard/login", data={"token": "x" * 20, "csrf_token": csrf_of(form)})
    assert answer.status_code == 401 and "That is not a token of this API." in answer.get_data(as_text=True)
    assert client.get("/dashboard/").status_code == 302


def test_signing_in_goes_back_to_the_page_asked_for_but_never_elsewhere(secured):
    for target, lands in [
        ("/dashboard/queues", "/dashboard/queues"),
        ("//evil.example/dashboard/", "/dashboard/"),
        ("https://evil.example/dashboard/", "/dashboard/"),
        ("/dashboard\\..\\evil", "/dashboard/"),
        ("/elsewhere", "/dashboard/"),
    ]:
        client = secured.test_client()
        form = client.get("/dashboard/login").get_data(as_text=True)
        answer = client.post(
            "/dashboard/login", query_string={"next": target}, data={"token": FULL, "csrf_token": csrf_of(form)}
        )
        assert answer.headers["Location"] == lands, target


def test_an_expired_a_forged_or_a_rotated_out_session_is_refused(secured, make_app):
    serializer = secured.session_interface.get_signing_serializer(secured)
    lifetime = secured.permanent_session_lifetime.total_seconds()
    fresh = {"scope": "full", "who": fingerprint(FULL), "at": time.time(), "sid": "s", "csrf": "c"}
    client = secured.test_client()

    def with_cookie(session, app=secured):
        other = app.test_client()
        other.set_cookie(access.COOKIE, serializer.dumps(session), path="/dashboard")
        return other.get("/dashboard/").status_code

    assert with_cookie(fresh) == 200, "the same cookie, in time: the check can pass"
    assert with_cookie({**fresh, "at": time.time() - lifetime - 1}) == 302, "past DASHBOARD_SESSION_SECONDS"
    assert with_cookie({**fresh, "who": fingerprint(READ)}) == 302, "a read-only token's session made full"
    assert with_cookie({**fresh, "scope": "admin"}) == 302
    assert with_cookie({**fresh, "at": "now"}) == 302
    client.set_cookie(access.COOKIE, serializer.dumps(fresh)[:-2] + "xx", path="/dashboard")
    assert client.get("/dashboard/").status_code == 302, "a signature that does not verify"
    # Another set of tokens (a rotation) derives another key: every session ends.
    rotated = make_app(api_auth="required", api_tokens=(FULL, "another-token-" + "9" * 8))
    assert with_cookie(fresh, rotated) == 302


@pytest.mark.parametrize(
    ("form", "headers"),
    [
        ({}, {}),
        ({"csrf_token": "guessed"}, {}),
        ({"csrf_token": "TOKEN"}, {"Origin": "http://evil.example"}),
        ({"csrf_token": "TOKEN"}, {"Origin": "http://localhost:8001"}),  # another port
        ({"csrf_token": "TOKEN"}, {"Sec-Fetch-Site": "cross-site"}),
        ({"csrf_token": "TOKEN"}, {"Sec-Fetch-Site": "same-site"}),
    ],
)
def test_a_post_without_this_sessions_csrf_token_or_from_elsewhere_is_refused(secured, task_client, form, headers):
    client = secured.test_client()
    token = sign_in(client, FULL)
    task_id = task_client.add(task="sleep", state=states.STARTED)
    form = {k: token if v == "TOKEN" else v for k, v in form.items()}
    answer = client.post(f"/dashboard/tasks/{task_id}/revoke", data=form, headers=headers)
    assert answer.status_code == 403 and "Refused: a" in answer.get_data(as_text=True)
    assert task_client.revoked == []


@pytest.mark.parametrize(
    "headers", [{}, {"Origin": "http://localhost"}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}]
)
def test_the_same_post_with_the_token_from_this_origin_goes_through(secured, task_client, headers):
    client = secured.test_client()
    token = sign_in(client, FULL)
    task_id = task_client.add(task="sleep", state=states.STARTED)
    answer = client.post(f"/dashboard/tasks/{task_id}/revoke", data={"csrf_token": token}, headers=headers)
    assert answer.status_code == 302 and answer.headers["Location"] == f"/dashboard/tasks/{task_id}"
    assert task_client.revoked == [task_id]


def test_the_token_may_come_as_a_header_too(secured, task_client):
    client = secured.test_client()
    token = sign_in(client, FULL)
    task_id = task_client.add(task="sleep", state=states.STARTED)
    assert client.post(f"/dashboard/tasks/{task_id}/revoke", headers={"X-CSRF-Token": token}).status_code == 302


def test_a_read_only_session_is_refused_every_action_server_side_but_sign_out(secured, task_client):
    client = secured.test_client()
    token = sign_in(client, READ)
    task_id = task_client.add(task="sleep", state=states.STARTED)
    failed = task_client.add(state=states.FAILURE)
    assert "read-only" in client.get("/dashboard/").get_data(as_text=True)
    for path in (f"/dashboard/tasks/{task_id}/revoke", f"/dashboard/tasks/{failed}/retry", "/dashboard/bulk/revoke"):
        answer = client.post(path, data={"csrf_token": token, "task": "sleep"})
        assert answer.status_code == 403, path
        assert "This token may only read" in answer.get_data(as_text=True)
    assert task_client.revoked == [] and "retried_by" not in task_client.views[failed]
    # Sign-out works for it, and a copy of its cookie is no good afterwards.
    cookie = client.get_cookie(access.COOKIE, path="/dashboard").value
    answer = client.post("/dashboard/logout", data={"csrf_token": token})
    assert answer.status_code == 302 and answer.headers["Location"] == "/dashboard/login"
    assert client.get("/dashboard/").status_code == 302
    copy = secured.test_client()
    copy.set_cookie(access.COOKIE, cookie, path="/dashboard")
    assert copy.get("/dashboard/").status_code == 302


def test_the_json_api_never_reads_the_dashboards_cookie(secured):
    client = secured.test_client()
    sign_in(client, FULL)
    assert client.get("/tasks").status_code == 401


def test_an_open_api_opens_the_dashboard_with_csrf_still_required(app, make_app, task_client):
    client = app.test_client()
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "anonymous" in page.get_data(as_text=True)
    assert client.get("/dashboard/login").headers["Location"] == "/dashboard/"
    task_id = task_client.add(task="sleep", state=states.STARTED)
    assert client.post(f"/dashboard/tasks/{task_id}/revoke").status_code == 403
    # Another process of the same open API signs with the same key, kept in Redis.
    assert app.secret_key == task_client.redis.get(access.OPEN_KEY).decode()
    second = make_app()
    assert second.secret_key is None, "not known before its first request"
    other = second.test_client()
    other.set_cookie(access.COOKIE, client.get_cookie(access.COOKIE, path="/dashboard").value, path="/dashboard")
    token = csrf_of(other.get("/dashboard/bulk").get_data(as_text=True))
    assert token == csrf_of(client.get("/dashboard/bulk").get_data(as_text=True))
    assert other.post(f"/dashboard/tasks/{task_id}/revoke", data={"csrf_token": token}).status_code == 302
    assert task_client.revoked == [task_id]


def test_without_redis_the_dashboard_is_501_and_with_redis_down_503(app, secured, task_client):
    task_client.redis.down = True
    assert app.test_client().get("/dashboard/").status_code == 503, "an open API's key is in Redis"
    signed = secured.test_client()
    task_client.redis.down = False
    sign_in(signed, FULL)
    task_client.redis.down = True
    answer = signed.get("/dashboard/")
    assert answer.status_code == 503 and "The result store (Redis) is unavailable" in answer.get_data(as_text=True)
    task_client.without_redis()
    answer = signed.get("/dashboard/")
    assert answer.status_code == 501 and "needs Redis as the result store" in answer.get_data(as_text=True)


def test_every_page_forbids_framing_caching_and_foreign_scripts(secured):
    client = secured.test_client()
    for path in ("/dashboard/login", "/dashboard/queues"):
        answer = client.get(path)
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
        assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "same-origin" and answer.headers["Cache-Control"] == "no-store"
    login = client.get("/dashboard/login")
    nonce = login.headers["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
    assert f'<style nonce="{nonce}">' in login.get_data(as_text=True)
    assert nonce != client.get("/dashboard/login").headers["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
    sign_in(client, FULL)
    with client.get("/dashboard/static/dashboard.js") as script:
        assert script.status_code == 200 and script.headers["Cache-Control"] == "private, max-age=300"


# -- the task list and the actions, over the stand-in --------------------------------------


def test_the_task_list_keeps_known_filters_and_drops_the_rest(client, task_client):
    queued = task_client.add(task="sleep")
    page = client.get("/dashboard/?state=PENDING&task=sleep")
    assert page.status_code == 200 and queued in page.get_data(as_text=True)
    assert 'value="sleep" selected' in page.get_data(as_text=True)
    assert task_client.calls[-1] == ("list_tasks", ("PENDING", "sleep", None, views.PAGE_SIZE))
    client.get("/dashboard/?state=DONE&task=nope")
    assert task_client.calls[-1] == ("list_tasks", (None, None, None, views.PAGE_SIZE))
    fragment = client.get("/dashboard/?fragment=1").get_data(as_text=True)
    assert "<html" not in fragment and queued in fragment


def test_a_bad_cursor_shows_the_first_page(client, task_client):
    assert client.get("/dashboard/?cursor=not-one").status_code == 200
    assert [args[2] for call, args in task_client.calls if call == "list_tasks"] == ["not-one", None]


def test_an_id_searched_for_opens_its_task_or_says_there_is_none(client, task_client):
    task_id = task_client.add()
    for searched in (task_id, f" {task_id.upper()} ", f"http://host/dashboard/tasks/{task_id}"):
        answer = client.get("/dashboard/", query_string={"id": searched})
        assert answer.headers["Location"] == f"/dashboard/tasks/{task_id}", searched
    unknown = client.get(f"/dashboard/?id={uuid.uuid4()}", follow_redirects=True).get_data(as_text=True)
    assert "No task with id" in unknown
    assert "No task with id" in client.get("/dashboard/?id=' OR 1=1").get_data(as_text=True)


def test_a_finished_task_is_not_revoked_and_the_page_says_why(client, task_client):
    token = csrf_of(client.get("/dashboard/bulk").get_data(as_text=True))
    done = task_client.add(state=states.SUCCESS)
    answer = client.post(f"/dashboard/tasks/{done}/revoke", data={"csrf_token": token}, follow_redirects=False)
    assert answer.status_code == 302 and task_client.revoked == []
    with client.session_transaction("/dashboard/") as session:
        assert session["_flashes"] == [("error", "Not revoked: it already finished (SUCCESS).")]
    assert client.post(f"/dashboard/tasks/{uuid.uuid4()}/revoke", data={"csrf_token": token}).status_code == 404
    assert client.post("/dashboard/tasks/not-an-id/retry", data={"csrf_token": token}).status_code == 404


def test_a_retry_from_its_page_links_the_new_task_or_says_why_not(client, task_client):
    token = csrf_of(client.get("/dashboard/bulk").get_data(as_text=True))
    failed = task_client.add(state=states.FAILURE)
    assert client.post(f"/dashboard/tasks/{failed}/retry", data={"csrf_token": token}).status_code == 302
    new_id = task_client.views[failed]["retried_by"]
    client.post(f"/dashboard/tasks/{failed}/retry", data={"csrf_token": token})
    with client.session_transaction("/dashboard/") as session:
        flashed = [message for _, message in session["_flashes"]]
    assert flashed == [
        f'Retried as <a href="/dashboard/tasks/{new_id}">{new_id}</a>.',
        f"Not retried: task {failed} was already retried",
    ]


def test_the_bulk_form_checks_its_fields_before_acting(client, app):
    token = csrf_of(client.get("/dashboard/bulk").get_data(as_text=True))
    recorder = app.extensions["workqueue-bulk"]
    for form, says in [
        ({"task": "nope"}, "Choose a task."),
        ({"task": "flaky", "since": "yesterday"}, "The time is not one"),
        ({"task": "flaky"}, "Retry needs a time"),
        ({"task": "flaky", "since": "2026-12-06T10:00", "limit": "x"}, "Bad limit or cursor."),
        ({"task": "flaky", "since": "2026-12-06T10:00", "cursor": "crafted"}, "Bad limit or cursor."),
    ]:
        answer = client.post("/dashboard/bulk/retry", data={"csrf_token": token, **form})
        assert answer.status_code == 422 and says in answer.get_data(as_text=True), form
    assert [call for call, _ in recorder.calls if call != "log"] == []
    answer = client.post(
        "/dashboard/bulk/retry",
        data={"csrf_token": token, "task": "flaky", "since": "2026-12-06T10:00", "limit": "9999"},
    )
    assert answer.status_code == 200 and "Retried 0 tasks of flaky" in answer.get_data(as_text=True)
    action, call = next(c for c in recorder.calls if c[0] == "retry_failed")
    assert (
        call["limit"] == 500
        and call["since"] == dt.datetime(2026, 12, 6, 10, tzinfo=dt.UTC).timestamp()
        and call["who"] == "dashboard anonymous (API_AUTH=off)"
    )


@pytest.mark.parametrize(
    ("target", "inside"),
    [("/dashboard/queues", True), ("/dashboard/", True), ("/dashboard", False), ("//dashboard/", False),
     ("/dashboard/\\evil", False), ("https://x/dashboard/", False), ("", False)],
)  # fmt: skip
def test_only_targets_inside_the_dashboard_are_followed(target, inside):
    assert views._inside(target) is inside
