"""The index of submitted tasks, newest first, kept in Redis beside the submission records.

Two sorted sets scored by submission time (microseconds since the epoch):
every task, and the tasks of each name.  They are written in the same
round trip as the submission record, carry the same expiry, and drop entries
older than the expiry as they go, so no scan of all keys is ever needed.

Listing reads a bounded slice of the index and the tasks' current views
(state is always read live, so a task that finishes, fails, retries or is
revoked is listed as it stands).  A state filter is applied to that slice:
a page may hold fewer than ``limit`` tasks when few match, and its cursor
continues where the slice ended, so every page costs the same.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

ALL = "workqueue-index"
BY_TASK = "workqueue-index-task-"
# Index entries read per page, at most: bounds the cost of a filtered page.
SLICE = 1000
# Index entries read per round trip when filtering by state.
FILTER_CHUNK = 250


# A cursor this API gives out is about 80 characters; scores are
# microseconds since the epoch, exact in a float up to 2**53.
MAX_CURSOR_LENGTH = 200
MAX_SCORE = 2**53


class BadCursor(ValueError):
    """The cursor was not made by this API."""


def encode_cursor(score: float, task_id: str) -> str:
    raw = json.dumps([score, task_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(score, task id) of a cursor ``encode_cursor`` made; ``BadCursor`` for anything else.

    A cursor comes from the client: only the exact shape this API gives out
    passes (a finite score of a time since the epoch in microseconds and a
    task id), so nothing crafted reaches Redis as a score (NaN, a number too
    large for a float) or costs more to read than a real cursor.
    """
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw, parse_constant=_no_constant)
        if not isinstance(decoded, list) or len(decoded) != 2:
            raise ValueError
        score, task_id = decoded
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= MAX_SCORE:
            raise ValueError
        if not isinstance(task_id, str) or str(uuid.UUID(task_id)) != task_id:
            raise ValueError
        return float(score), task_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("cursor is not one this API gave out") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class TaskIndex:
    """Writes and reads the sorted sets; ``backend`` is Celery's Redis result backend."""

    def __init__(self, backend: Any, expires: int) -> None:
        self.backend = backend
        self.expires = expires

    def add(self, pipe: Any, task_id: str, task: str, when: float, only_new: bool = False) -> None:
        """Queue the index writes for one submission on ``pipe`` (a redis-py pipeline).

        ``only_new``: an entry already there keeps its place (a worker
        recording a task that reached it without a record).
        """
        score = round(when * 1_000_000)
        oldest = round((when - self.expires) * 1_000_000)
        for key in (self._key(ALL), self._key(BY_TASK + task)):
            pipe.zadd(key, {task_id: score}, nx=only_new)
            pipe.zremrangebyscore(key, "-inf", f"({oldest}")
            pipe.expire(key, self.expires)

    def after(self, task: str | None, position: tuple[float, str] | None, count: int) -> list[tuple[str, float]]:
        """Up to ``count`` (id, score) entries, newest first, strictly after ``position``.

        Redis orders entries of equal score by member, descending; an entry
        after (score, id) has a lower score, or the same score and a lower id.
        """
        redis = self.backend.client
        key = self._key(BY_TASK + task if task else ALL)
        if position is None:
            rows = redis.zrevrangebyscore(key, "+inf", "-inf", start=0, num=count, withscores=True)
        else:
            score, last_id = position
            ties = redis.zcount(key, score, score)
            rows = redis.zrevrangebyscore(key, score, "-inf", start=0, num=count + ties, withscores=True)
        entries = [(m.decode() if isinstance(m, bytes) else m, s) for m, s in rows]
        if position is not None:
            entries = [(i, s) for i, s in entries if s < position[0] or i < position[1]]
        return entries[:count]

    def forget(self, task_ids: list[str], task: str | None) -> None:
        """Drop entries whose record and result expired (found while listing)."""
        if task_ids:
            redis = self.backend.client
            redis.zrem(self._key(ALL), *task_ids)
            if task:
                redis.zrem(self._key(BY_TASK + task), *task_ids)

    def _key(self, name: str) -> Any:
        return self.backend.key_t(name)
