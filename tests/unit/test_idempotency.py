"""The decisions of idempotency that need no server: which keys, which requests are the same, when a claim is stale.

The races (SET NX in Redis, concurrent requests, a publish that never got
its confirm) are tests/integration/test_idempotency.py and test_faults.py.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from celery import Celery
from hypothesis import given
from hypothesis import strategies as st

from workqueue import catalogue
from workqueue.client import TaskClient
from workqueue.idempotency import (
    ACCEPTED,
    MAX_KEY_LENGTH,
    PUBLISHING,
    RESERVED_PREFIXES,
    UNCONFIRMED,
    Claim,
    IdempotencyKeys,
    fingerprint,
    valid_key,
)

ADD = catalogue.load()["add"]


def test_the_same_submission_spelt_otherwise_has_one_fingerprint():
    positional = ADD.bind([20, 22], {})
    by_name = ADD.bind([], {"y": 22, "x": 20})
    mixed = ADD.bind([20], {"y": 22})
    assert fingerprint("add", positional) == fingerprint("add", by_name) == fingerprint("add", mixed)


@pytest.mark.parametrize(
    ("task", "kwargs"),
    [
        ("add", {"x": 20, "y": 23}),
        ("mul", {"x": 20, "y": 22}),
        ("add", {"x": 20.5, "y": 22}),
        ("add", {"x": 22, "y": 20}),
    ],
)
def test_another_task_or_other_arguments_have_another_fingerprint(task, kwargs):
    assert fingerprint(task, kwargs) != fingerprint("add", {"x": 20, "y": 22})


def test_a_fingerprint_is_a_sha256_that_shows_no_argument():
    printed = fingerprint("add", {"x": "a-secret-value", "y": 1})
    assert len(printed) == 64 and int(printed, 16) >= 0 and "secret" not in printed


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=MAX_KEY_LENGTH))
def test_any_printable_ascii_key_of_up_to_200_characters_is_valid(key):
    assert valid_key(key)


@pytest.mark.parametrize("key", ["", "x" * (MAX_KEY_LENGTH + 1), "café", "tab\there", "new\nline", "\x7f", "日本"])
def test_other_keys_are_not(key):
    assert not valid_key(key)


def test_the_reserved_prefixes_are_the_charts_schedules_and_batch_jobs():
    assert RESERVED_PREFIXES == ("schedule:", "batch:")


def test_claims_are_taken_once_settled_and_released_on_the_embedded_store(tmp_path):
    """The try-out store has no SET NX; the same calls keep one claim per key there too."""
    keys = IdempotencyKeys(Celery(set_as_current=False, backend=f"file://{tmp_path}").backend, expires=60)
    first = Claim("task-1", fingerprint("add", {"x": 1, "y": 2}), PUBLISHING, at=1.0)
    assert keys.claim("order-42", first) is None
    second = Claim("task-2", first.fingerprint, PUBLISHING, at=2.0)
    assert keys.claim("order-42", second) == first, "the second request sees the first one's claim"
    keys.settle("order-42", first, ACCEPTED)
    assert keys.claim("order-42", second) == dataclasses.replace(first, state=ACCEPTED)
    keys.release("order-42")
    assert keys.claim("order-42", second) is None, "a key whose request queued nothing is free again"


@pytest.mark.parametrize(("timeout", "stale_after"), [(0.05, 10.0), (1.0, 10.0), (3.0, 30.0)])
def test_a_publishing_claim_is_stale_only_after_ten_dependency_timeouts_and_at_least_ten_seconds(
    settings, timeout, stale_after
):
    client = TaskClient(dataclasses.replace(settings, api_dependency_timeout=timeout))
    try:
        now = time.time()
        assert not client._stale(Claim("t", "f", PUBLISHING, at=now - stale_after + 1))
        assert client._stale(Claim("t", "f", PUBLISHING, at=now - stale_after - 1))
        assert client._stale(Claim("t", "f", UNCONFIRMED, at=0.0)), "a claim from before any timeout"
    finally:
        client.close()
