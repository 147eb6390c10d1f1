"""Revocations on the embedded file store: kept per id, listed for a worker that starts later, expired."""

from __future__ import annotations

import time

from celery import Celery

from workqueue.revocations import Revocations


def test_the_file_store_keeps_lists_and_expires_revocations(tmp_path):
    app = Celery(set_as_current=False, backend=f"file://{tmp_path}")
    backend = app.backend
    revocations = Revocations(backend, expires=60)
    revocations.add("a")
    revocations.add("b")
    assert "a" in revocations and "c" not in revocations
    assert revocations.requested(["a", "b", "c"]) == {"a", "b"}
    assert revocations.current() == ["a", "b"]  # what a worker started later loads
    backend.set(backend.key_t("workqueue-revoked-old"), str(time.time() - 1))  # a revoke whose time ran out
    assert "old" not in revocations and "old" not in revocations.current()
    later = Celery(set_as_current=False, backend=f"file://{tmp_path}")  # another process: a worker started later
    assert Revocations(later.backend, expires=60).current() == ["a", "b"]
