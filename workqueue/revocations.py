"""Revoked task ids, kept in the result store as long as results are.

Celery's revoke is a broadcast to the workers running at that moment; a
worker started later (a rollout, a scale-up, a crash) never hears it.  The
ids are also kept here, in one Redis sorted set scored by expiry time, so a
worker loads them whenever its consumer (re)connects, and a running task can
look itself up when it reports progress.

The embedded file store (``./dev.sh up --embedded``) keeps one file per
revoked id instead (its value the expiry time), so revoking a running task
works there too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

KEY = "workqueue-revoked"
FILE_PREFIX = KEY + "-"  # the embedded store: one key per id


class Revocations:
    """The revoked ids; ``backend`` is Celery's result backend (Redis, or the embedded file store)."""

    def __init__(self, backend: Any, expires: int) -> None:
        self.backend = backend
        self.expires = expires
        self.redis = getattr(backend, "client", None)

    def add(self, task_id: str) -> None:
        self.add_many([task_id])

    def add_many(self, task_ids: list[str]) -> None:
        now = time.time()
        if self.redis is None:
            for task_id in task_ids:
                self.backend.set(self._file_key(task_id), str(now + self.expires))
            return
        if task_ids:
            with self.redis.pipeline() as pipe:
                pipe.zadd(self._key(), dict.fromkeys(task_ids, now + self.expires))
                pipe.zremrangebyscore(self._key(), "-inf", now)  # forget what expired
                pipe.expire(self._key(), self.expires)
                pipe.execute()

    def current(self) -> list[str]:
        """Every revoked id that has not expired."""
        if self.redis is None:
            prefix = self._file_key("").decode()
            names = [name for name in os.listdir(self.backend.path.decode()) if name.startswith(prefix)]
            return sorted(self.requested(name.removeprefix(prefix) for name in names))
        members = self.redis.zrangebyscore(self._key(), time.time(), "+inf")
        return [m.decode() if isinstance(m, bytes) else m for m in members]

    def queue_lookup(self, pipe: Any, task_ids: list[str]) -> None:
        """Queue on ``pipe`` (a redis-py pipeline) the read that ``revoked_among`` decodes (one ZMSCORE)."""
        pipe.zmscore(self._key(), task_ids)

    def revoked_among(self, task_ids: list[str], scores: list[Any]) -> set[str]:
        """Which of ``task_ids`` are revoked, from what ``queue_lookup`` read."""
        now = time.time()
        return {task_id for task_id, score in zip(task_ids, scores, strict=True) if score is not None and score > now}

    def requested(self, task_ids: Iterable[str]) -> set[str]:
        """Which of ``task_ids`` were revoked (and the revoke has not expired), in one round trip."""
        ids = list(task_ids)
        if not ids:
            return set()
        if self.redis is None:
            scores = [self.backend.get(self._file_key(task_id)) for task_id in ids]
        else:
            with self.redis.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.zscore(self._key(), task_id)
                scores = pipe.execute()
        now = time.time()
        return {task_id for task_id, score in zip(ids, scores, strict=True) if score is not None and float(score) > now}

    def __contains__(self, task_id: str) -> bool:
        return bool(self.requested([task_id]))

    def _key(self) -> Any:
        return self.backend.key_t(KEY)

    def _file_key(self, task_id: str) -> Any:
        return self.backend.key_t(FILE_PREFIX + task_id)
