"""Idempotency keys: one key, one task, kept as long as results are.

A claim is one Redis ``SET NX`` with the result expiry, holding the task id,
a fingerprint of the request (task name and bound arguments) and where the
submission stands: ``publishing`` until the broker confirmed, then
``accepted`` (or ``unconfirmed`` when the confirm did not come in time).
``SET NX`` makes concurrent requests with one key race for one claim: the
losers see the winner's claim instead of creating a second task.  A claim
left "unconfirmed", or "publishing" for longer than any publish takes (its
request died), does not hold the key for ever: a repeat of the request
publishes the same task id again (``TaskClient.submit_once``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

KEY_PREFIX = "workqueue-idempotency-"
MAX_KEY_LENGTH = 200
# Keys of the chart's CronJobs (schedule:<name>:<Job name>) and batch Jobs
# (batch:<Job UID>): the command line may use them, HTTP clients may not.
RESERVED_PREFIXES = ("schedule:", "batch:")

PUBLISHING, ACCEPTED, UNCONFIRMED = "publishing", "accepted", "unconfirmed"


def fingerprint(task: str, kwargs: Mapping[str, Any]) -> str:
    """The same submission, however its JSON was spelt (key order, args vs kwargs)."""
    canonical = json.dumps({"task": task, "kwargs": kwargs}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def valid_key(key: str) -> bool:
    """1-200 printable ASCII characters."""
    return 0 < len(key) <= MAX_KEY_LENGTH and all(" " <= ch <= "~" for ch in key)


@dataclasses.dataclass(frozen=True)
class Claim:
    task_id: str
    fingerprint: str
    state: str
    at: float = 0.0  # when it was claimed (epoch seconds): a "publishing" claim goes stale


class IdempotencyKeys:
    """Claims in the result store (Redis); ``backend`` is Celery's result backend."""

    def __init__(self, backend: Any, expires: int) -> None:
        self.backend = backend
        self.expires = expires

    def claim(self, key: str, claim: Claim) -> Claim | None:
        """Store ``claim`` unless the key is taken; return the existing claim if it is."""
        stored = self._key(key)
        text = json.dumps(dataclasses.asdict(claim))
        redis = getattr(self.backend, "client", None)
        if redis is not None:
            if redis.set(stored, text, nx=True, ex=self.expires):
                return None
            raw = redis.get(stored)
        else:
            # The embedded file store has no atomic set-if-absent (try-out mode only).
            raw = self.backend.get(stored)
            if raw is None:
                self.backend.set(stored, text)
                return None
        if raw is None:  # expired between the two calls: claim it now
            return self.claim(key, claim)
        return Claim(**json.loads(raw))

    def settle(self, key: str, claim: Claim, state: str) -> None:
        """Record how the claimed submission ended (keeps the key's expiry)."""
        text = json.dumps(dataclasses.asdict(dataclasses.replace(claim, state=state)))
        redis = getattr(self.backend, "client", None)
        if redis is not None:
            redis.set(self._key(key), text, xx=True, keepttl=True)
        else:
            self.backend.set(self._key(key), text)

    def release(self, key: str) -> None:
        """Free the key: nothing was queued, so a retry may submit again."""
        self.backend.delete(self._key(key))

    def _key(self, key: str) -> Any:
        return self.backend.key_t(KEY_PREFIX + key)
