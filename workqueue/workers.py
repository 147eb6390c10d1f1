"""Live workers: a heartbeat key per worker in Redis, with an expiry the worker keeps refreshing.

Each worker writes ``workqueue-worker-<node name>`` (its queues, pool,
active tasks, last heartbeat) every ``WORKER_PRESENCE_INTERVAL`` seconds
with an expiry of ``EXPIRY_FACTOR`` times that, and names itself in one
sorted set scored by that expiry, so a reader finds every worker without a
scan of the keyspace.  A worker that stops cleanly deletes its key; one that
dies (SIGKILL, OOM, a lost node) or hangs stops refreshing it, and Redis
drops it within ``EXPIRY_FACTOR`` x the interval (15 s by default).  The
writer is ``worker/presence.py``; the reader is the dashboard.
"""

from __future__ import annotations

import json
import time
from typing import Any

KEY_PREFIX = "workqueue-worker-"
SET_KEY = "workqueue-workers"
EXPIRY_FACTOR = 3
MAX_ACTIVE_LISTED = 50  # active tasks named per worker; the count is always whole


def expiry(interval: float) -> int:
    """Seconds after its last heartbeat that a worker's key lives: how long a dead worker stays listed."""
    return max(1, round(EXPIRY_FACTOR * interval))


class Presence:
    """Write and read heartbeat keys; ``backend`` is Celery's Redis result backend."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def beat(self, info: dict[str, Any], interval: float) -> None:
        """Store this worker's ``info`` (with ``hostname``) for ``expiry(interval)`` seconds, in one round trip."""
        ttl, now = expiry(interval), time.time()
        info = {**info, "heartbeat_at": now, "expires_in": ttl}
        with self.backend.client.pipeline(transaction=False) as pipe:
            pipe.set(self._key(info["hostname"]), json.dumps(info), ex=ttl)
            pipe.zadd(self.backend.key_t(SET_KEY), {info["hostname"]: now + ttl})
            pipe.zremrangebyscore(self.backend.key_t(SET_KEY), "-inf", now)  # workers gone for good
            pipe.expire(self.backend.key_t(SET_KEY), max(ttl, 86_400))
            pipe.execute()

    def leave(self, hostname: str) -> None:
        """A clean stop: gone from the list at once."""
        with self.backend.client.pipeline(transaction=False) as pipe:
            pipe.delete(self._key(hostname))
            pipe.zrem(self.backend.key_t(SET_KEY), hostname)
            pipe.execute()

    def live(self) -> list[dict[str, Any]]:
        """Every worker whose key has not expired, by node name."""
        redis = self.backend.client
        names = redis.zrangebyscore(self.backend.key_t(SET_KEY), time.time(), "+inf")
        names = sorted(n.decode() if isinstance(n, bytes) else n for n in names)
        raws = redis.mget([self._key(name) for name in names]) if names else []
        return [json.loads(raw) for raw in raws if raw]

    def _key(self, hostname: str) -> Any:
        return self.backend.key_t(KEY_PREFIX + hostname)
