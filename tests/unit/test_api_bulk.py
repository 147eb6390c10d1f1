"""POST /tasks/bulk/retry and /tasks/bulk/revoke, GET /tasks/bulk/actions: what the views accept and hand on.

The walk over the index is ``workqueue.bulk.BulkActions`` (tested against
Redis in tests/integration/test_dashboard.py); here it is a recorder, and
the tests check the views' parsing of ``task``, ``since``, ``limit`` and
``cursor`` and the answers they give.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from api.bulk import parse_since
from api.errors import ApiError
from tests.answers import assert_error
from workqueue.bulk import DEFAULT_LIMIT, MAX_LIMIT
from workqueue.client import DependencyUnavailable
from workqueue.index import encode_cursor

SINCE = "2026-12-06T10:00:00Z"
EPOCH = dt.datetime(2026, 12, 6, 10, tzinfo=dt.UTC).timestamp()


@pytest.fixture
def bulk(app):
    """The recorder standing in for BulkActions."""
    return app.extensions["workqueue-bulk"]


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        (SINCE, EPOCH),
        ("2026-12-06T10:00:00", EPOCH),  # no zone: UTC
        ("2026-12-06t10:00:00z", EPOCH),  # RFC 3339 allows lower case
        ("2026-12-06T11:00:00+01:00", EPOCH),
        (" 2026-12-06T10:00:00Z ", EPOCH),
        ("2026-12-06T09:59:60Z", EPOCH - 1),  # a leap second, read as :59
        ("2026-12-06", dt.datetime(2026, 12, 6, tzinfo=dt.UTC).timestamp()),
        # Valid, but before year 1 or after year 9999 in UTC (the fuzzer found a 500, then a 422 for
        # a time its schema allows): the nearest time Python has, which selects the same tasks.
        ("0001-01-01T00:00:00+00:01", dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp()),
        ("9999-12-31T23:59:59-00:01", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()),
    ],
)
def test_since_is_an_iso_8601_time_in_utc_unless_it_says_otherwise(text, epoch):
    assert parse_since(text, required=True) == epoch


@pytest.mark.parametrize(
    "raw",
    [
        "yesterday", "", "2026-13-01", 1765015200, None, ["2026-12-06"], "2" * 41,
    ],
)  # fmt: skip
def test_anything_else_is_refused_when_a_time_is_required(raw):
    with pytest.raises(ApiError) as refused:
        parse_since(raw, required=True)
    assert (refused.value.status, refused.value.code) == (422, "invalid_since")
    assert refused.value.message == 'since must be an ISO 8601 time, e.g. "2026-12-06T10:00:00Z"'


def test_no_since_is_any_time_where_it_is_optional():
    assert parse_since(None, required=False) is None


def test_a_bulk_retry_hands_on_the_task_time_caller_cursor_and_limit(client, bulk):
    cursor = encode_cursor(1.0, str(uuid.uuid4()))
    response = client.post("/tasks/bulk/retry", json={"task": "flaky", "since": SINCE, "limit": 2, "cursor": cursor})
    assert response.status_code == 200
    assert bulk.calls == [
        (
            "retry_failed",
            {"task": "flaky", "since": EPOCH, "who": "anonymous (API_AUTH=off)", "cursor": cursor, "limit": 2},
        )
    ]
    body = response.get_json()
    assert body["action"] == "retry_failed" and body["tasks"] == [] and body["since"] == "2026-12-06T10:00:00+00:00"


def test_a_bulk_revoke_needs_no_time_and_defaults_its_limit(client, bulk):
    assert client.post("/tasks/bulk/revoke", json={"task": "sleep"}).status_code == 200
    assert client.post("/tasks/bulk/revoke", json={"task": "sleep", "since": None, "limit": 100.0}).status_code == 200
    assert [call for _, call in bulk.calls] == [
        {"task": "sleep", "since": None, "who": "anonymous (API_AUTH=off)", "cursor": None, "limit": DEFAULT_LIMIT},
        {"task": "sleep", "since": None, "who": "anonymous (API_AUTH=off)", "cursor": None, "limit": 100},
    ]


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        ({"task": "flaky"}, 422, "invalid_since", "since must be an ISO 8601 time"),
        ({"task": "nope", "since": SINCE}, 422, "unknown_task", "unknown task 'nope'"),
        ({"since": SINCE}, 422, "unknown_task", 'no "task" given'),
        ({"task": "flaky", "since": "yesterday"}, 422, "invalid_since", "ISO 8601"),
        ({"task": "flaky", "since": SINCE, "limit": MAX_LIMIT + 1}, 422, "invalid_request", "from 1 to 500"),
        ({"task": "flaky", "since": SINCE, "limit": 0}, 422, "invalid_request", "limit must be an integer"),
        ({"task": "flaky", "since": SINCE, "limit": 2.5}, 422, "invalid_request", "limit must be an integer"),
        ({"task": "flaky", "since": SINCE, "limit": True}, 422, "invalid_request", "limit must be an integer"),
        ({"task": "flaky", "since": SINCE, "limit": "10"}, 422, "invalid_request", "limit must be an integer"),
        ({"task": "flaky", "since": SINCE, "cursor": 5}, 400, "invalid_cursor", "not one this API gave out"),
        ({"task": "flaky", "since": SINCE, "cursor": "crafted"}, 400, "invalid_cursor", "not one this API gave out"),
        ({"task": "flaky", "since": SINCE, "extra": 1}, 422, "invalid_request", "['extra']; allowed: task, since"),
        ([{"task": "flaky"}], 422, "invalid_request", "body must be a JSON object"),
    ],
)  # fmt: skip
def test_bulk_retry_refuses_what_it_cannot_do_and_says_why(client, bulk, body, status, code, says):
    assert says in assert_error(client.post("/tasks/bulk/retry", json=body), status, code)
    assert not [call for call in bulk.calls if call[0] != "log"], "nothing was acted on"


def test_bulk_bodies_are_json_like_every_other(client):
    assert_error(
        client.post("/tasks/bulk/revoke", data="task=sleep", content_type="text/plain"), 415, "unsupported_media_type"
    )
    assert_error(client.post("/tasks/bulk/revoke", data="{", content_type="application/json"), 400, "invalid_json")


def test_an_outage_during_a_bulk_call_is_503(client, bulk):
    def down(*args, **kwargs):
        raise DependencyUnavailable("result backend", OSError("refused"))

    bulk.revoke_queued = down
    assert_error(client.post("/tasks/bulk/revoke", json={"task": "sleep"}), 503, "unavailable")


def test_the_log_lists_recorded_actions_newest_first_within_its_bounds(client, bulk):
    client.post("/tasks/bulk/revoke", json={"task": "sleep"})
    client.post("/tasks/bulk/retry", json={"task": "flaky", "since": SINCE})
    actions = client.get("/tasks/bulk/actions?limit=2").get_json()["actions"]
    assert [a["action"] for a in actions] == ["retry_failed", "revoke_queued"]
    assert bulk.calls[-1] == ("log", {"count": 2})
    assert client.get("/tasks/bulk/actions").status_code == 200 and bulk.calls[-1] == ("log", {"count": 50})
    for limit in ("0", "201", "x"):
        assert "limit must be a number from 1 to 200" in assert_error(
            client.get(f"/tasks/bulk/actions?limit={limit}"), 422, "invalid_parameter"
        )
    assert_error(client.get("/tasks/bulk/actions?cursor=x"), 422, "invalid_parameter")
    assert_error(client.get("/tasks/bulk/retry"), 405, "method_not_allowed")
