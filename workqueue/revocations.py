"""Revoked task ids, kept in the result store as long as results are.

Celery's revoke is a broadcast to the workers running at that moment; a
worker started later (a rollout, a scale-up, a crash) never hears it.  The
ids are also kept here, in one Redis sorted set scored by expiry time, so a
worker loads them whenever its consumer (re)connects, and a running task can
look itself up when it reports progress.
"""

from __future__ import annotations

import time
from typing import Any

KEY = "workqueue-revoked"


class Revocations:
    """The revoked ids; ``backend`` is Celery's result backend (Redis)."""

    def __init__(self, backend: Any, expires: int) -> None:
        self.backend = backend
        self.expires = expires
        # The embedded file store keeps none: there, revoke is a broadcast only.
        self.redis = getattr(backend, "client", None)

    def add(self, task_id: str) -> None:
        self.add_many([task_id])

    def add_many(self, task_ids: list[str]) -> None:
        if self.redis is not None and task_ids:
            now = time.time()
            with self.redis.pipeline() as pipe:
                pipe.zadd(self._key(), dict.fromkeys(task_ids, now + self.expires))
                pipe.zremrangebyscore(self._key(), "-inf", now)  # forget what expired
                pipe.expire(self._key(), self.expires)
                pipe.execute()

    def current(self) -> list[str]:
        """Every revoked id that has not expired."""
        if self.redis is None:
            return []
        members = self.redis.zrangebyscore(self._key(), time.time(), "+inf")
        return [m.decode() if isinstance(m, bytes) else m for m in members]

    def __contains__(self, task_id: str) -> bool:
        if self.redis is None:
            return False
        score = self.redis.zscore(self._key(), task_id)
        return score is not None and score > time.time()

    def _key(self) -> Any:
        return self.backend.key_t(KEY)
