"""Pub/sub connections to the result store, kept and reused across waits.

``GET /tasks/<id>?wait=`` and the event stream subscribe to the task's key,
where the worker publishes every state it stores.  redis-py's
``PubSub.close()`` disconnects, so a subscriber per wait paid a TCP connect
and redis-py's handshake each time: ~2.2 ms against ~0.6 ms on a kept
connection, a fifth of a whole submit -> result (bench/README.md, "A result
in one round trip").  Here a subscriber is unsubscribed and kept instead.

A kept connection may still hold the previous channel's unsubscribe
confirmation or a late message for it; a subscriber therefore waits for
*its* subscribe confirmation, and ``messages`` yields only its channel's.
A connection Redis dropped meanwhile is reconnected by redis-py on the next
command (it re-subscribes itself).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from kombu.utils.encoding import str_to_bytes

KEEP = 16  # idle subscribers kept per process; more concurrent waits open (and close) their own


class Subscription:
    """One channel on a pub/sub connection."""

    def __init__(self, pubsub: Any, channel: bytes) -> None:
        self.pubsub = pubsub
        self.channel = channel

    def confirm(self, timeout: float) -> bool:
        """Wait until Redis confirms this subscription: nothing published after it is missed."""
        return self._next("subscribe", timeout) is not None

    def message(self, timeout: float) -> Any | None:
        """The next message published on this channel within ``timeout``, or None."""
        return self._next("message", timeout)

    def _next(self, kind: str, timeout: float) -> Any | None:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            found = self.pubsub.get_message(timeout=remaining)
            # Skips what an earlier user of the connection left: its
            # unsubscribe confirmation, late messages, health-check pongs.
            if found is not None and found["type"] == kind and found["channel"] == self.channel:
                return found
        return None


class Subscribers:
    """A pool of idle pub/sub connections on ``redis`` (a redis-py client)."""

    def __init__(self, redis: Any, keep: int = KEEP) -> None:
        self.redis = redis
        self.keep = keep
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def subscribed(self, channel: str | bytes) -> Iterator[Subscription]:
        """Subscribe to ``channel`` on a kept connection (or a new one); give it back after."""
        with self._lock:
            pubsub = self._idle.pop() if self._idle else self.redis.pubsub()
        reusable = False
        try:
            pubsub.subscribe(channel)
            try:
                yield Subscription(pubsub, str_to_bytes(channel))
            except GeneratorExit:  # a watcher that stopped early (it got its answer): kept all the same
                pubsub.unsubscribe(channel)
                reusable = True
                raise
            pubsub.unsubscribe(channel)
            reusable = True
        finally:
            with self._lock:
                if reusable and len(self._idle) < self.keep:
                    self._idle.append(pubsub)
                    pubsub = None
            if pubsub is not None:  # an error left it in an unknown state, or enough are kept
                pubsub.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for pubsub in idle:
            pubsub.close()
