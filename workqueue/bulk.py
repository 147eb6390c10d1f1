"""Bulk actions: retry every failed task of a name since a time, revoke every queued task of a name.

Both walk the task index of one name, newest first (``workqueue/index.py``),
and are bounded like a page of the list: one call reads at most
``index.SLICE`` index entries and acts on at most ``limit`` tasks
(``MAX_LIMIT``), then answers with a cursor to continue from.  Both are
idempotent, so a call repeated after a timeout or a 503 does no harm:

* a retry goes through ``TaskClient.retry``, which retries a task once (a
  ``SET NX`` on the original), so a task retried by an earlier call is
  skipped as ``already_retried`` (and one whose retry was never confirmed
  by the broker is published again, as a single retry would);
* a revoke skips tasks already revoked; the ones it revokes are stored for
  workers that start later and broadcast in one message to the running ones.

Retry takes the tasks *submitted* since the time given (the index is ordered
by submission).  "Queued" is a task with no stored state yet: not started
(a worker may hold it prefetched; the broadcast reaches it there).

Each call is recorded in Redis (``LOG_KEY``, the newest ``LOG_KEEP``, kept as
long as results): who (a token's fingerprint, never the token), when, what,
and how many tasks it looked at, acted on and skipped; and logged by the API.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from celery import states

from workqueue import index
from workqueue.catalogue import ValidationFailed
from workqueue.client import RetryRefused, TaskClient

logger = logging.getLogger(__name__)

DEFAULT_LIMIT, MAX_LIMIT = 100, 500
LOG_KEY = "workqueue-bulk-actions"
LOG_KEEP = 1000
CHUNK = 250  # index entries read per round trip


@dataclass(frozen=True)
class Call:
    """One bulk call as asked for (what its record says)."""

    action: str
    task: str
    since: float | None
    who: str
    cursor: str | None
    limit: int


class BulkActions:
    """Bulk retry and revoke over the task index, recorded; ``client`` is the API's ``TaskClient``."""

    def __init__(self, client: TaskClient) -> None:
        self.client = client

    def retry_failed(
        self, task: str, since: float, who: str, cursor: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> dict[str, Any]:
        """Retry the FAILURE tasks of ``task`` submitted since ``since`` (epoch seconds)."""

        def act(found: list[str], outcome: dict[str, Any]) -> int | None:
            for at, task_id in enumerate(found):
                try:
                    outcome["acted"].append({"id": task_id, "new_id": self.client.retry(task_id)})
                except RetryRefused as exc:
                    outcome["skipped"][exc.kind if exc.kind != "unknown" else "expired"] += 1
                except ValidationFailed:
                    outcome["skipped"]["invalid_arguments"] += 1
                if len(outcome["acted"]) >= outcome["limit"]:
                    return at
            return None

        return self._run(Call("retry_failed", task, since, who, cursor, limit), self._failed, act)

    def revoke_queued(
        self, task: str, who: str, since: float | None = None, cursor: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> dict[str, Any]:
        """Revoke the tasks of ``task`` with no stored state yet (queued), submitted since ``since`` if given."""

        def act(found: list[str], outcome: dict[str, Any]) -> int | None:
            room = outcome["limit"] - len(outcome["acted"])
            chosen = found[:room]
            if chosen:
                with self.client._unavailable("result backend"):
                    self.client.revocations.add_many(chosen)
                with self.client._unavailable("broker"):
                    self.client.celery.control.revoke(chosen)  # one broadcast for all of them
                outcome["acted"].extend({"id": task_id} for task_id in chosen)
            return room - 1 if len(found) > room else None

        return self._run(Call("revoke_queued", task, since, who, cursor, limit), self._queued, act)

    def log(self, count: int = 50) -> list[dict[str, Any]]:
        """The newest ``count`` recorded bulk actions."""
        redis = self.client._redis()
        with self.client._unavailable("result backend"):
            raws = redis.lrange(self.client.celery.backend.key_t(LOG_KEY), 0, count - 1)
        return [json.loads(raw) for raw in raws]

    # -- the walk ------------------------------------------------------------

    def _run(self, call: Call, select: Any, act: Any) -> dict[str, Any]:
        self.client._redis()
        position = index.decode_cursor(call.cursor) if call.cursor else None  # BadCursor before anything is done
        floor = call.since * 1_000_000 if call.since is not None else -float("inf")
        outcome: dict[str, Any] = {"limit": call.limit, "acted": [], "skipped": Counter(), "scanned": 0, "matched": 0}
        next_cursor: str | None = None
        error: BaseException | None = None
        try:
            next_cursor = self._walk(call.task, position, floor, outcome, select, act)
        except Exception as exc:
            error = exc
            raise
        finally:
            entry = self._record(call, next_cursor, outcome, error)
        return entry

    def _walk(self, task: str, position: Any, floor: float, outcome: dict[str, Any], select: Any, act: Any) -> Any:
        while outcome["scanned"] < index.SLICE and len(outcome["acted"]) < outcome["limit"]:
            wanted = min(CHUNK, index.SLICE - outcome["scanned"])
            with self.client._unavailable("result backend"):
                entries = self.client.index.after(task, position, wanted)
            in_range = [(task_id, score) for task_id, score in entries if score >= floor]
            with self.client._unavailable("result backend"):
                found = select([task_id for task_id, _ in in_range])
            outcome["matched"] += len(found)
            stopped_at = act(found, outcome)
            if stopped_at is not None:  # the limit: continue after the last task acted on
                last = found[stopped_at]
                outcome["matched"] -= len(found) - stopped_at - 1
                outcome["scanned"] += next(at for at, (i, _) in enumerate(in_range) if i == last) + 1
                score = next(s for i, s in in_range if i == last)
                return index.encode_cursor(score, last)
            outcome["scanned"] += len(in_range)
            if len(in_range) < len(entries) or len(entries) < wanted:
                return None  # past the time given, or the end of the index
            position = in_range[-1][1], in_range[-1][0]
        return index.encode_cursor(*position) if position else None

    def _failed(self, task_ids: list[str]) -> list[str]:
        backend = self.client.celery.backend
        raws = backend.mget([backend.get_key_for_task(i) for i in task_ids]) if task_ids else []
        return [i for i, raw in zip(task_ids, raws, strict=True) if raw and json.loads(raw)["status"] == states.FAILURE]

    def _queued(self, task_ids: list[str]) -> list[str]:
        """Recorded, no stored state, not revoked already."""
        if not task_ids:
            return []
        backend, redis = self.client.celery.backend, self.client._redis()
        with redis.pipeline(transaction=False) as pipe:
            pipe.mget([backend.get_key_for_task(i) for i in task_ids])
            pipe.mget([self.client._record_key(i) for i in task_ids])
            pipe.zmscore(self.client.revocations._key(), task_ids)
            metas, records, revoked = pipe.execute()
        now = time.time()
        return [
            task_id
            for task_id, meta, record, until in zip(task_ids, metas, records, revoked, strict=True)
            if meta is None and record is not None and not (until and until > now)
        ]

    def _record(
        self, call: Call, next_cursor: str | None, outcome: dict[str, Any], error: BaseException | None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "action": call.action,
            "task": call.task,
            "since": _isoformat(call.since) if call.since is not None else None,
            "who": call.who,
            "at": _isoformat(time.time()),
            "scanned": outcome["scanned"],
            "matched": outcome["matched"],
            "acted": len(outcome["acted"]),
            "skipped": dict(outcome["skipped"]),
            "cursor": call.cursor,
            "next_cursor": next_cursor,
        }
        if error is not None:
            entry["error"] = f"{type(error).__name__}: {error}"[:300]
        counts = {k: entry[k] for k in list(entry)[5:]}
        logger.info("bulk %s of %s by %s: %s", call.action, call.task, call.who, json.dumps(counts))
        key = self.client.celery.backend.key_t(LOG_KEY)
        try:
            with self.client._redis().pipeline(transaction=False) as pipe:
                pipe.lpush(key, json.dumps(entry))
                pipe.ltrim(key, 0, LOG_KEEP - 1)
                pipe.expire(key, self.client.settings.result_expires)
                pipe.execute()
        except self.client.errors as exc:
            logger.warning("bulk action not recorded in Redis (it is in this log): %s", exc)
        return {**entry, "tasks": outcome["acted"]}


def _isoformat(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()
