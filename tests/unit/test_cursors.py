"""Cursors of the task list: what the API gives out reads back exactly; anything crafted is refused.

A cursor comes from the client, so ``decode_cursor`` lets only the exact
shape ``encode_cursor`` makes reach Redis: a finite score of microseconds
since the epoch and a task id in its canonical form.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workqueue.index import MAX_CURSOR_LENGTH, MAX_SCORE, BadCursor, decode_cursor, encode_cursor

TASK_ID = "6f1c3a52-0f5e-4a8e-9d7b-2c1c7b1f0a11"


def crafted(value: object) -> str:
    """A cursor made the way the API makes them, around any JSON value."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@given(score=st.integers(min_value=0, max_value=MAX_SCORE), task_id=st.uuids().map(str))
def test_every_cursor_the_api_makes_reads_back_as_it_was(score, task_id):
    cursor = encode_cursor(score, task_id)
    assert decode_cursor(cursor) == (float(score), task_id)
    assert len(cursor) <= MAX_CURSOR_LENGTH and "=" not in cursor
    assert cursor == base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    ).decode().rstrip("=")


def test_a_real_cursor_of_today_is_about_eighty_characters():
    assert 70 < len(encode_cursor(1_765_015_200_000_000, TASK_ID)) < 90


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 at all!",
        "W10",  # []
        crafted([1.0]),
        crafted([1.0, TASK_ID, 3]),
        crafted({"score": 1.0, "id": TASK_ID}),
        crafted([True, TASK_ID]),  # a bool is no score
        crafted(["1", TASK_ID]),
        crafted([-1, TASK_ID]),
        crafted([MAX_SCORE + 1, TASK_ID]),
        crafted([1e308, TASK_ID]),
        crafted([1.0, "not-a-uuid"]),
        crafted([1.0, TASK_ID.upper()]),  # the same id, not as the API writes it
        crafted([1.0, "{" + TASK_ID + "}"]),
        crafted([1.0, 5]),
        crafted([1.0, None]),
        base64.urlsafe_b64encode(b'[NaN, "' + TASK_ID.encode() + b'"]').decode(),
        base64.urlsafe_b64encode(b'[Infinity, "' + TASK_ID.encode() + b'"]').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe[1]").decode(),
        "A" * (MAX_CURSOR_LENGTH + 1),
        encode_cursor(1.0, TASK_ID) + "A" * MAX_CURSOR_LENGTH,
    ],
)
def test_anything_else_is_a_bad_cursor(cursor):
    with pytest.raises(BadCursor, match="^cursor is not one this API gave out$"):
        decode_cursor(cursor)


@given(st.text(max_size=300))
def test_no_text_at_all_gets_past_it_as_anything_but_a_well_formed_cursor(text):
    try:
        score, task_id = decode_cursor(text)
    except BadCursor:
        return
    assert 0 <= score <= MAX_SCORE and str(uuid.UUID(task_id)) == task_id
