"""Tasks per minute and queue waits over the last hour: a small rolling store in Redis.

One hash per minute (``workqueue-stats-<minute since the epoch>``), kept two
hours, holds:

* how many tasks reached each of SUCCESS, FAILURE and REVOKED, and how many
  attempts ended in RETRY, that minute.  The result store's script adds
  them in the same round trip as the state itself, and only when the state
  was really stored (a late copy of a finished task adds nothing), so the
  worker pays no extra write per task;
* queue waits: ``wait:<queue>:<bucket>``, the first attempts whose wait from
  submission (the API's stamp in the message) to start fell in that bucket
  of ``WAIT_BOUNDS``, the bounds of the worker's own histogram
  (``workqueue_task_queue_wait_seconds``).  p50 and p95 are read from the
  buckets as Prometheus' ``histogram_quantile`` does.

Submissions per minute need no counter: the task index holds every
submission scored by its time (``workqueue/index.py``), and a ZCOUNT per
minute reads them.  Nothing here needs Prometheus.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any

KEY_PREFIX = "workqueue-stats-"
KEEP_SECONDS = 2 * 3600
MINUTES = 60  # what the dashboard shows
COUNTED = ("SUCCESS", "FAILURE", "REVOKED", "RETRY")
WAIT_PREFIX = "wait:"
WAIT_BOUNDS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800)  # the last bucket: above 1800 s


def minute_of(epoch: float) -> int:
    return int(epoch // 60)


def key_name(minute: int) -> str:
    return f"{KEY_PREFIX}{minute}"


def wait_field(queue: str, seconds: float) -> str:
    """The hash field that counts a wait of ``seconds`` in ``queue``."""
    return f"{WAIT_PREFIX}{queue}:{bisect.bisect_left(WAIT_BOUNDS, seconds)}"


def fields_for(state: str, queue: str | None = None, wait: float | None = None) -> list[str]:
    """The fields one stored state increments (none for most states)."""
    fields = [state] if state in COUNTED else []
    if wait is not None and queue:
        fields.append(wait_field(queue, wait))
    return fields


def quantile(q: float, counts: list[int]) -> float | None:
    """The ``q`` quantile of a bucketed distribution, interpolated inside its bucket (None: no samples).

    A quantile in the last, unbounded bucket is reported as its lower bound.
    """
    total = sum(counts)
    if not total:
        return None
    rank, seen = q * total, 0
    for at, count in enumerate(counts):
        if count and seen + count >= rank:
            if at >= len(WAIT_BOUNDS):
                return float(WAIT_BOUNDS[-1])
            low = WAIT_BOUNDS[at - 1] if at else 0.0
            return low + (WAIT_BOUNDS[at] - low) * (rank - seen) / count
        seen += count
    return float(WAIT_BOUNDS[-1])


@dataclass
class Minute:
    start: int  # epoch seconds
    submitted: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        return self.counts.get("SUCCESS", 0)

    @property
    def failed(self) -> int:
        return self.counts.get("FAILURE", 0)


class Throughput:
    """Reads the last hour; ``backend`` is Celery's Redis result backend, ``index_key`` the index of all tasks."""

    def __init__(self, backend: Any, index_key: Any) -> None:
        self.backend = backend
        self.index_key = index_key

    def read(self, now: float | None = None, minutes: int = MINUTES) -> tuple[list[Minute], dict[str, dict]]:
        """The last ``minutes`` minutes, oldest first, and per queue its waits' count, p50 and p95.

        One pipelined round trip: a HGETALL and a ZCOUNT per minute.
        """
        current = minute_of(time.time() if now is None else now)
        span = range(current - minutes + 1, current + 1)
        with self.backend.client.pipeline(transaction=False) as pipe:
            for minute in span:
                pipe.hgetall(self.backend.key_t(key_name(minute)))
                low, high = minute * 60_000_000, (minute + 1) * 60_000_000
                pipe.zcount(self.index_key, low, f"({high}")
            replies = pipe.execute()
        series, buckets = [], {}
        for at, minute in enumerate(span):
            raw, submitted = replies[2 * at], replies[2 * at + 1]
            row = Minute(start=minute * 60, submitted=int(submitted))
            for name, value in raw.items():
                name = name.decode() if isinstance(name, bytes) else name
                if name.startswith(WAIT_PREFIX):
                    queue, _, bucket = name[len(WAIT_PREFIX) :].rpartition(":")
                    counts = buckets.setdefault(queue, [0] * (len(WAIT_BOUNDS) + 1))
                    if bucket.isdigit() and int(bucket) < len(counts):
                        counts[int(bucket)] += int(value)
                else:
                    row.counts[name] = int(value)
            series.append(row)
        waits = {
            queue: {"count": sum(counts), "p50": quantile(0.5, counts), "p95": quantile(0.95, counts)}
            for queue, counts in sorted(buckets.items())
        }
        return series, waits
