"""``TaskClient``: the one way into the queue and the result store.

The API, ``submit_tasks.py``, ``run.sh wait``, the tests and the benchmarks
all submit, read, revoke and check reachability through it.  It owns the
client-role Celery app (which gives up within ``API_DEPENDENCY_TIMEOUT``),
the exceptions that mean "a server is down", and the catalogue.

A submission writes a small record (task name, submission time) to the
result store *before* publishing, then publishes once with a publisher
confirm (``workqueue/publisher.py``: never twice, aware of broker alarms).
The record is what tells "pending" from "never submitted" (Celery itself
reports PENDING for any unknown id).  Writing it first means a fast worker
can never finish the task before its record exists.  With an idempotency key
one key makes one task (``workqueue/idempotency.py``); a revoke is kept in
the result store for workers that start later (``workqueue/revocations.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from celery import Celery, states
from kombu.exceptions import OperationalError
from redis.exceptions import OutOfMemoryError, ReadOnlyError

from workqueue import catalogue, index, tracing
from workqueue.catalogue import Catalogue, TaskDefinition
from workqueue.celery_app import DEFAULT_QUEUE, close_celery, create_celery, make_queue
from workqueue.idempotency import ACCEPTED, PUBLISHING, UNCONFIRMED, Claim, IdempotencyKeys, fingerprint
from workqueue.publisher import BrokerBlocked, NotPublished, Publisher, PublishUnconfirmed
from workqueue.records import RECORD_PREFIX
from workqueue.records import record_json as _record_json
from workqueue.result_store import REFUSING_WRITES
from workqueue.revocations import Revocations
from workqueue.settings import Settings
from workqueue.subscriptions import KEEP, Subscribers

__all__ = ["DependencyUnavailable", "IdempotencyConflict", "PublishUnconfirmed", "TaskClient", "TooManyWaits"]

RETRIED_PREFIX = "workqueue-retried-"
REPUBLISHING_PREFIX = "workqueue-republishing-"
READINESS_KEY = "workqueue-readiness-probe"
READINESS_SECONDS = 1.0  # how long a readiness answer is shared
KEEPALIVE = object()  # yielded by a watch after quiet seconds (see TaskClient.watch)
RESUBSCRIBE_SECONDS = 0.25  # between a watch's attempts to subscribe again after its connection dropped
T = TypeVar("T")
# Keys per MGET when reading many tasks at once.
READ_BATCH = 1000
# Listing reads of each submission record its start (task name, submission
# time) and its end (retry_of), never the arguments between (up to 256 KB
# each, which a list does not show): see ``_listed_views``.
LISTED_HEAD, LISTED_TAIL = 512, 64
ARGUMENTS_MARK = ', "kwargs": '  # where the arguments start in a record (``_record_json``)
_RECORD_TAIL = re.compile(r', "retry_of": ("[0-9a-f-]{36}")\}$')


class DependencyUnavailable(RuntimeError):
    """The broker or the result store did not answer in time, or refuses what it must take.

    ``reason``: ``down`` (no answer in time), ``blocked`` (RabbitMQ blocks
    publishers: a memory or disk alarm), ``full`` (Redis at ``maxmemory``
    with ``noeviction``) or ``read_only`` (a Redis replica, e.g. after a
    failover).  Nothing was queued.  ``where``: the host and port (or the
    folder of an embedded store) that was tried, never credentials.
    """

    def __init__(self, dependency: str, cause: BaseException, where: str = "") -> None:
        at = f" at {where}" if where else ""
        super().__init__(f"{dependency} unavailable{at}: {type(cause).__name__}: {cause}")
        self.dependency = dependency
        self.where = where
        self.reason = _reason(cause)
        self.blocked = self.reason == "blocked"


class TooManyWaits(RuntimeError):
    """This process already holds ``API_MAX_WAITS`` waits and event streams."""


class Watch:
    """An open watch (``TaskClient.watch``): iterate for views; ``close()`` frees its slot, even if never iterated."""

    def __init__(self, views: Iterator[Any], release: Callable[[], Any]) -> None:
        self._views = views
        self._release: Callable[[], Any] | None = release

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Any:
        return next(self._views)

    def close(self) -> None:
        try:
            self._views.close()  # type: ignore[attr-defined]
        finally:
            if self._release is not None:
                self._release, release = None, self._release
                release()


class Cached:
    """One value, computed by one caller at a time and kept for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._value: Any = None
        self._at = -float("inf")

    def get(self, compute: Callable[[], T]) -> T:
        with self._lock:  # concurrent callers wait here for the computation under way
            if time.monotonic() - self._at >= self.seconds:
                self._value = compute()
                self._at = time.monotonic()
            return self._value  # type: ignore[no-any-return]


class RedisRequired(RuntimeError):
    """Listing, waiting and retrying need Redis; the embedded file store has no index nor notifications."""


class RetryRefused(ValueError):
    """A retry that cannot be made: ``unknown``, ``not_failed`` or ``already_retried``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class IdempotencyConflict(ValueError):
    """The idempotency key is in use by another request (``in_progress``) or another body (``mismatch``)."""

    def __init__(self, kind: str, task_id: str) -> None:
        super().__init__(kind)
        self.kind = kind
        self.task_id = task_id


class TaskClient:
    """Submit, describe and revoke tasks; check the broker and the result store."""

    def __init__(self, settings: Settings, tasks: Catalogue | None = None) -> None:
        self.settings = settings
        self.catalogue = tasks if tasks is not None else catalogue.for_settings(settings)
        self._queues = {name: make_queue(settings, name) for name in self.catalogue.queues}
        self.celery: Celery = create_celery(settings, role="client")
        self.errors = _dependency_errors(self.celery)
        self.publisher = Publisher(
            self.celery,
            self.errors,
            settings.api_dependency_timeout,
            amqp=settings.broker_is_amqp,
            settings=settings,
            max_connections=settings.api_broker_connections,
        )
        self.idempotency = IdempotencyKeys(self.celery.backend, settings.result_expires)
        self.revocations = Revocations(self.celery.backend, settings.result_expires)
        self.index = index.TaskIndex(self.celery.backend, settings.result_expires)
        self._kept_subscribers: Subscribers | None = None  # made on the first wait (Redis only)
        self._watch_slots = threading.BoundedSemaphore(settings.api_max_waits)
        self.watching = 0  # waits and streams open in this process
        self.on_watching: Callable[[int], None] | None = None  # told each change (the API's gauge)
        # Readiness is checked by one caller at a time and kept briefly: a loop
        # of /readyz costs the servers a check a second, not one per request.
        self._readiness = Cached(READINESS_SECONDS)
        self._reader: Any = None  # one kept broker connection for queue status
        # Where each dependency is, for error messages (no credentials).
        self.where = {"broker": address(settings.broker_url), "result backend": address(settings.result_backend)}
        self._reader_lock = threading.Lock()

    def close(self) -> None:
        self.publisher.close()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.collect()
                self._reader = None
        if self._kept_subscribers is not None:
            self._kept_subscribers.close()
        close_celery(self.celery)

    # -- submitting --------------------------------------------------------

    def submit(
        self,
        task: str | TaskDefinition,
        kwargs: Mapping[str, Any],
        task_id: str | None = None,
        retry_of: str | None = None,
    ) -> str:
        """Record and publish one task; return its id once the broker confirmed it.

        ``kwargs`` must already be validated (``TaskDefinition.bind``).
        Raises ``DependencyUnavailable`` when nothing was queued (the result
        store or the broker is down or refuses, or the broker blocks
        publishers), and ``PublishUnconfirmed`` when the message was written
        but not confirmed in time.  Then the task may or may not be queued:
        its record says so (``"unconfirmed": true`` in its view), and the
        exception's ``idempotency_key`` (the task id) makes a repeat of the
        same request with that key publish it again (``submit_once``).
        """
        definition = self.catalogue[task] if isinstance(task, str) else task
        task_id = task_id or str(uuid.uuid4())
        try:
            return self._submit(definition, kwargs, task_id, retry_of)
        except PublishUnconfirmed as exc:
            if retry_of is None:
                # A claim under the task id: the way back for a client that sent no key.
                claim = Claim(task_id, fingerprint(definition.name, kwargs), UNCONFIRMED, time.time())
                with contextlib.suppress(*self.errors):
                    self.idempotency.claim(task_id, claim)
                exc.idempotency_key = task_id
            raise

    def submit_once(self, task: TaskDefinition, kwargs: Mapping[str, Any], idempotency_key: str) -> tuple[str, bool]:
        """``submit`` under an idempotency key: ``(task id, replayed)``.

        The first request with a key submits (``replayed`` False); a later one
        with the same task and arguments gets the same id back (``replayed``
        True).  When the first publish was never confirmed (a 504), or its
        request died while publishing (a claim still "publishing" after
        ``publishing_timeout``), a repeat publishes the same task id again,
        unless the task already has a stored state (the first copy landed),
        and answers as a first submission (``replayed`` False).  Raises
        ``IdempotencyConflict`` when the key came with another request
        (``mismatch``) or its first request is still publishing
        (``in_progress``).  A request that queued nothing frees its key.
        """
        claim = Claim(str(uuid.uuid4()), fingerprint(task.name, kwargs), PUBLISHING, time.time())
        with self._unavailable("result backend"):
            existing = self.idempotency.claim(idempotency_key, claim)
        if existing is not None:
            if existing.fingerprint != claim.fingerprint:
                raise IdempotencyConflict("mismatch", existing.task_id)
            if existing.state == ACCEPTED or (existing.state == PUBLISHING and not self._stale(existing)):
                if existing.state == PUBLISHING:
                    raise IdempotencyConflict("in_progress", existing.task_id)
                return existing.task_id, True
            claim = existing
            try:
                published = self._ensure_published(claim.task_id, task, kwargs)
            except PublishUnconfirmed as exc:
                exc.idempotency_key = idempotency_key
                raise
            self._settle(idempotency_key, claim, ACCEPTED)
            return claim.task_id, not published
        try:
            self._submit(task, kwargs, claim.task_id)
        except PublishUnconfirmed as exc:
            self._settle(idempotency_key, claim, UNCONFIRMED)
            exc.idempotency_key = idempotency_key
            raise
        except DependencyUnavailable:
            with contextlib.suppress(*self.errors):
                self.idempotency.release(idempotency_key)
            raise
        self._settle(idempotency_key, claim, ACCEPTED)
        return claim.task_id, False

    def _stale(self, claim: Claim) -> bool:
        """A "publishing" claim older than any publish can take: its request died."""
        return time.time() - claim.at > self.settings.publishing_timeout

    def _ensure_published(self, task_id: str, task: TaskDefinition, kwargs: Mapping[str, Any]) -> bool:
        """Publish ``task_id`` again unless it is known to be queued; True if it was published now.

        For a task whose publish was never confirmed.  A task with a stored
        state was evidently queued (a worker took it); one without a record
        was never published (its request died before).  Otherwise a second
        copy is published with the same id, flagged for the worker, which
        acknowledges it without running when the first copy already
        finished.  One caller at a time per task (``in_progress`` otherwise).
        Raises like ``submit``; the record keeps saying "unconfirmed" until a
        publish is confirmed.
        """
        redis = self._redis()
        lock = self.celery.backend.key_t(REPUBLISHING_PREFIX + task_id)
        with self._unavailable("result backend"):
            if not redis.set(lock, "1", nx=True, ex=int(self.settings.publishing_timeout)):
                raise IdempotencyConflict("in_progress", task_id)
        try:
            with self._unavailable("result backend"):
                record = self.record(task_id)
                landed = self.celery.backend.get(self._result_key(task_id)) is not None
            if record is None:
                self._submit(task, kwargs, task_id)
                return True
            if not landed:
                self._publish(task, task_id, record["kwargs"], republished=True)
            with self._unavailable("result backend"):
                self._set_unconfirmed(task_id, False)
            return not landed
        finally:
            with contextlib.suppress(*self.errors):
                redis.delete(lock)

    def _submit(
        self, definition: TaskDefinition, kwargs: Mapping[str, Any], task_id: str, retry_of: str | None = None
    ) -> str:
        now = time.time()
        # The arguments stay with the record: a retry resubmits them.
        record: dict[str, Any] = {"task": definition.name, "submitted_at": _isoformat(now)}
        if retry_of:
            record["retry_of"] = retry_of
        trace_id = tracing.current_trace_id(self.settings)  # None unless tracing is on
        if trace_id:
            record["trace_id"] = trace_id
        record["kwargs"] = dict(kwargs)
        key = self._record_key(task_id)
        with self._unavailable("result backend"):
            try:
                self._store_record(key, _record_json(record), task_id, definition.name, now)
            except self.errors:
                self._forget(key)  # a full Redis may have taken the record and refused the index
                raise
        self._publish(definition, task_id, kwargs)
        return task_id

    def _publish(
        self, definition: TaskDefinition, task_id: str, kwargs: Mapping[str, Any], republished: bool = False
    ) -> None:
        try:
            queue = self._queues.get(definition.queue) or make_queue(self.settings, definition.queue)
            self.publisher.publish(definition.celery_name, task_id, dict(kwargs), queue, republished=republished)
        except (BrokerBlocked, NotPublished) as exc:
            if not republished:
                self._forget(self._record_key(task_id))
            raise DependencyUnavailable("broker", exc, self.where["broker"]) from exc
        except PublishUnconfirmed:
            # Its fate is unknown: the view says so until a repeat is confirmed.
            with contextlib.suppress(*self.errors):
                self._set_unconfirmed(task_id, True)
            raise

    def _set_unconfirmed(self, task_id: str, unconfirmed: bool) -> None:
        """Flag (or unflag) the task's record: its publish was never confirmed."""
        redis = getattr(self.celery.backend, "client", None)
        key = self._record_key(task_id)
        raw = redis.get(key) if redis is not None else self.celery.backend.get(key)
        if raw is None:
            return
        record = json.loads(raw)
        if bool(record.get("unconfirmed")) == unconfirmed:
            return
        if unconfirmed:
            record["unconfirmed"] = True
        else:
            record.pop("unconfirmed", None)
        if redis is not None:
            redis.set(key, _record_json(record), xx=True, keepttl=True)
        else:
            self.celery.backend.set(key, _record_json(record))

    def _settle(self, key: str, claim: Claim, state: str) -> None:
        # The task is queued (or may be): if Redis fails now, the claim stays
        # "publishing" until it is stale, and a repeat then publishes the
        # same task id again (``_ensure_published``), never a second task.
        with contextlib.suppress(*self.errors):
            self.idempotency.settle(key, claim, state)

    def _store_record(self, key: Any, record: str, task_id: str, task: str, when: float) -> None:
        """The record and its index entries, in one round trip to Redis.

        A plain pipeline, not Celery's ``backend.set`` (MULTI/EXEC with a
        PUBLISH for result listeners, which no one listens to for this key:
        a third of the CPU a submission costs).  The embedded file store
        keeps the record only (no index: no listing there).
        """
        backend = self.celery.backend
        redis = getattr(backend, "client", None)
        if redis is None:
            backend.set(key, record)
            return
        with redis.pipeline(transaction=False) as pipe:
            pipe.set(key, record, ex=self.settings.result_expires)
            self.index.add(pipe, task_id, task, when)
            pipe.execute()

    def _forget(self, key: Any) -> None:
        try:
            self.celery.backend.delete(key)
        except self.errors:
            pass  # the record expires with the results; the client never saw this id

    # -- reading -----------------------------------------------------------

    def describe(self, task_id: str) -> dict[str, Any] | None:
        """The public view of a task, or None when the id was never submitted."""
        return self.describe_many([task_id])[task_id]

    def describe_many(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Views of many tasks, one MGET per ``READ_BATCH`` ids."""
        backend = self.celery.backend
        ids = list(task_ids)
        views: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(ids), READ_BATCH):
            chunk = ids[start : start + READ_BATCH]
            n = len(chunk)
            keys = [
                *(self._record_key(i) for i in chunk),
                *(backend.get_key_for_task(i) for i in chunk),
                *(self._retried_key(i) for i in chunk),
            ]
            redis = getattr(backend, "client", None)
            with self._unavailable("result backend"):
                if redis is not None:
                    # A revoke is stored at once and acted on by a worker later:
                    # until then the view says it was asked for.  Read in the
                    # same round trip as the records and states.
                    with redis.pipeline(transaction=False) as pipe:
                        pipe.mget(keys)
                        self.revocations.queue_lookup(pipe, chunk)
                        raws, scores = pipe.execute()
                    revoked = self.revocations.revoked_among(chunk, scores)
                else:  # the embedded file store: a second read, for the unfinished only
                    raws = list(backend.mget(keys))
                    revoked = None
            unfinished: dict[str, dict[str, Any]] = {}
            for at, task_id in enumerate(chunk):
                view = views[task_id] = self._view(task_id, raws[at], raws[n + at], raws[2 * n + at])
                if view is not None and view["state"] not in states.READY_STATES:
                    unfinished[task_id] = view
            if revoked is None:
                with self._unavailable("result backend"):
                    revoked = self.revocations.requested(unfinished)
            for task_id in revoked & set(unfinished):
                unfinished[task_id]["revoke_requested"] = True
        return views

    def record(self, task_id: str) -> dict[str, Any] | None:
        """What was submitted (task name, arguments, time), or None."""
        with self._unavailable("result backend"):
            raw = self.celery.backend.get(self._record_key(task_id))
        return json.loads(raw) if raw else None

    def _view(self, task_id: str, raw_record: Any, raw_meta: Any, raw_retried: Any) -> dict[str, Any] | None:
        if raw_record is None and raw_meta is None:
            return None
        record = json.loads(raw_record) if raw_record else {}
        meta = self.celery.backend.decode(raw_meta) if raw_meta else {"status": states.PENDING}
        state = meta.get("status", states.PENDING)
        view: dict[str, Any] = {
            "id": task_id,
            "task": record.get("task") or self.catalogue.public_name(meta.get("name")),
            "state": state,
            "retries": meta.get("retries") or 0,
            "submitted_at": record.get("submitted_at"),
            "completed_at": meta.get("date_done") if state in states.READY_STATES else None,
        }
        result = meta.get("result")
        if state == states.SUCCESS:
            view["result"] = result
        elif state in (states.FAILURE, states.RETRY, states.REVOKED) and isinstance(result, dict):
            view["error"] = {"type": result.get("exc_type"), "message": _exc_message(result)}
        elif state == "PROGRESS":
            view["progress"] = result
        if record.get("unconfirmed") and raw_meta is None:
            # Its publish was never confirmed and no worker has taken it: it
            # may not be queued.  Repeating the request with its idempotency
            # key makes sure (``submit_once``).
            view["unconfirmed"] = True
        if record.get("via"):  # sent to Celery directly and recorded by the worker (no submission time)
            view["via"] = record["via"]
        if record.get("retry_of"):
            view["retry_of"] = record["retry_of"]
        if raw_retried:
            view["retried_by"] = raw_retried.decode() if isinstance(raw_retried, bytes) else raw_retried
        return view

    # -- listing and retrying ------------------------------------------------

    def list_tasks(
        self, state: str | None = None, task: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Submitted tasks, newest first, and the cursor of the next page (None at the end).

        A page reads at most ``index.SLICE`` index entries: with a state
        filter it may hold fewer than ``limit`` tasks and still have a next
        page.  Raises ``BadCursor`` for a cursor this API did not give out.
        """
        self._redis()
        position = index.decode_cursor(cursor) if cursor else None
        found: list[dict[str, Any]] = []
        scanned = 0
        while len(found) < limit and scanned < index.SLICE:
            # Filtered pages read bigger chunks: fewer round trips for rare states.
            wanted = min(max(limit, index.FILTER_CHUNK) if state else limit, index.SLICE - scanned)
            with self._unavailable("result backend"):
                entries = self.index.after(task, position, wanted)
                candidates = [task_id for task_id, _ in entries]
                if state is not None:
                    # Read only the stored states first; describe the matches alone.
                    candidates = self._matching(candidates, state)
                views = self._listed_views(candidates)
            expired = []
            for task_id, score in entries:
                position, scanned = (score, task_id), scanned + 1
                if task_id not in views:
                    continue
                view = views[task_id]
                if view is None:
                    expired.append(task_id)
                elif state is None or view["state"] == state:
                    found.append(view)
                    if len(found) == limit:
                        break
            with self._unavailable("result backend"):
                self.index.forget(expired, task)
            if len(entries) < wanted:
                return found, None
        return found, index.encode_cursor(*position) if position else None

    def _listed_views(self, task_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """``describe_many`` for a list: of each record only its head and tail (name, time, retry_of).

        A record whose head is not laid out as ``submit`` writes it is read
        whole, so nothing is ever shown wrong, only read in full.
        """
        backend, redis = self.celery.backend, self._redis()
        views: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(task_ids), READ_BATCH):
            chunk = task_ids[start : start + READ_BATCH]
            with redis.pipeline(transaction=False) as pipe:
                for task_id in chunk:
                    pipe.getrange(self._record_key(task_id), 0, LISTED_HEAD - 1)
                    pipe.getrange(self._record_key(task_id), -LISTED_TAIL, -1)
                pipe.mget([*(backend.get_key_for_task(i) for i in chunk), *(self._retried_key(i) for i in chunk)])
                *parts, raws = pipe.execute()
            n = len(chunk)
            for at, task_id in enumerate(chunk):
                record = self._record_summary(task_id, parts[2 * at], parts[2 * at + 1])
                views[task_id] = self._view(task_id, record, raws[at], raws[n + at])
        return views

    def _record_summary(self, task_id: str, head: bytes, tail: bytes) -> str | None:
        """The record without its arguments, as JSON (None: no record).

        ``submit`` writes the arguments last (``_record_json``), so what a
        list shows is the JSON object in the head, before ``, "kwargs": ``
        (unescaped quotes occur in JSON only around keys and strings, so
        that text cannot come from inside a value).  A record of another
        layout is read whole: nothing is ever shown wrong, only read in full.
        """
        if not head:
            return None
        text = head.decode("utf-8", "replace")
        cut = text.find(ARGUMENTS_MARK)
        if cut > 0:
            summary = json.loads(text[:cut] + "}")
            if "retry_of" not in summary:  # records of 0.2, written before the arguments went last
                retry_of = _RECORD_TAIL.search(tail.decode("utf-8", "replace"))
                if retry_of:
                    summary["retry_of"] = json.loads(retry_of[1])
            return json.dumps(summary)
        raw = self.celery.backend.get(self._record_key(task_id))
        return None if raw is None else str(raw.decode() if isinstance(raw, bytes) else raw)

    def _matching(self, task_ids: list[str], state: str) -> list[str]:
        """The ids whose stored state is ``state`` (no stored state: PENDING, or expired)."""
        backend = self.celery.backend
        raws = backend.mget([backend.get_key_for_task(i) for i in task_ids]) if task_ids else []
        matching = []
        for task_id, raw in zip(task_ids, raws, strict=True):
            stored = json.loads(raw)["status"] if raw else states.PENDING
            if stored == state or raw is None:  # a missing one may have expired: describe it
                matching.append(task_id)
        return matching

    def retry(self, task_id: str) -> str:
        """Submit a failed or revoked task again, with its original arguments; return the new id.

        The arguments are validated again against today's catalogue.  Raises
        ``RetryRefused`` when the task is unknown, not finished as FAILURE or
        REVOKED, or already retried (a second retry request gets the first
        one's id in the exception, never a third task).
        """
        redis = self._redis()
        view = self.describe(task_id)
        record = self.record(task_id)
        if view is None or record is None or "kwargs" not in record:
            raise RetryRefused("unknown", f"no task {task_id} with recorded arguments (or it expired)")
        if view["state"] not in (states.FAILURE, states.REVOKED):
            raise RetryRefused(
                "not_failed", f"task {task_id} is {view['state']}: only FAILURE or REVOKED can be retried"
            )
        definition = self.catalogue.lookup(record["task"])
        kwargs = definition.bind(record.get("args", ()), record["kwargs"])
        new_id = str(uuid.uuid4())
        with self._unavailable("result backend"):
            # SET NX: concurrent retries of one task make one new task.
            if not redis.set(self._retried_key(task_id), new_id, nx=True, ex=self.settings.result_expires):
                return self._retried_again(task_id, definition, kwargs)
        try:
            return self.submit(definition, kwargs, task_id=new_id, retry_of=task_id)
        except PublishUnconfirmed as exc:
            exc.retry_of = task_id  # repeating the retry publishes the new task again
            raise
        except DependencyUnavailable:
            with contextlib.suppress(*self.errors):
                self.celery.backend.delete(self._retried_key(task_id))
            raise

    def _retried_again(self, task_id: str, definition: TaskDefinition, kwargs: Mapping[str, Any]) -> str:
        """A repeated retry: the new task's id again if its publish was unconfirmed (published again now)."""
        with self._unavailable("result backend"):
            raw = self.celery.backend.get(self._retried_key(task_id))
            new_id = raw.decode() if isinstance(raw, bytes) else raw
            record = self.record(new_id) if new_id else None
        if not new_id or not record or not record.get("unconfirmed"):
            raise RetryRefused("already_retried", f"task {task_id} was already retried")
        try:
            self._ensure_published(new_id, definition, kwargs)
        except PublishUnconfirmed as exc:
            exc.retry_of = task_id
            raise
        return new_id

    # -- revoking ----------------------------------------------------------

    def revoke(self, task_id: str) -> None:
        """Revoke a task: stored for workers that start later, and broadcast to the running ones.

        A task not yet started is discarded and recorded REVOKED; one already
        running stops at its next progress report (a prefork process cannot
        be stopped safely from outside without killing it).
        """
        with self._unavailable("result backend"):
            self.revocations.add(task_id)
        with self._unavailable("broker"):
            self.celery.control.revoke(task_id)

    # -- reachability ------------------------------------------------------

    def check_broker(self) -> None:
        """The broker accepts a publish (an unroutable probe it drops), within the dependency timeout."""
        try:
            self.publisher.probe()
        except (BrokerBlocked, NotPublished) as exc:
            raise DependencyUnavailable("broker", exc, self.where["broker"]) from exc

    def check_result_store(self) -> None:
        """The result store takes a write, in one round trip.

        A write, not a read: a full Redis (maxmemory, noeviction) or a
        read-only replica answers reads and refuses every submission.
        """
        backend = self.celery.backend
        key = backend.key_t(READINESS_KEY)
        redis = getattr(backend, "client", None)
        with self._unavailable("result backend"):
            if redis is not None:
                redis.set(key, "1", ex=60)
            else:
                backend.set(key, "1")

    def status(self) -> tuple[dict[str, str], dict[str, str]]:
        """``(readiness(), queue_consumers())``, checked at most once per ``READINESS_SECONDS``.

        Concurrent callers wait for the one check under way and share its
        answer, so the cost of ``/readyz`` does not grow with its callers.
        """

        def check() -> tuple[dict[str, str], dict[str, str]]:
            checks = self.readiness()
            return checks, self.queue_consumers() if checks["broker"] == "ok" else {}

        return self._readiness.get(check)

    def readiness(self) -> dict[str, str]:
        """``{"broker": "ok" | "unavailable: <why>", "result_backend": ...}``."""
        checks = {}
        for name, check in (("broker", self.check_broker), ("result_backend", self.check_result_store)):
            try:
                check()
                checks[name] = "ok"
            except DependencyUnavailable as exc:
                cause = exc.__cause__
                if exc.reason == "down":
                    checks[name] = f"unavailable: {type(cause).__name__}"
                else:  # up, but refusing: say why (blocked by an alarm, full, read-only)
                    checks[name] = f"{exc.reason.replace('_', '-')}: {cause}"
        return checks

    def queue_depth(self, queue: str = DEFAULT_QUEUE) -> int:
        """Messages ready in ``queue`` (a passive declare: never creates it)."""
        return self.queue_status(queue)[0]

    def queue_status(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of ``queue``; a queue not declared yet counts (0, 0).

        On one kept connection (a new one only after the broker dropped it).
        """
        with self._reader_lock, self._unavailable("broker"):
            try:
                return self._kept_queue_status(queue)
            except self.errors:  # the kept connection may be one the broker dropped: once more, on a new one
                return self._kept_queue_status(queue)

    def _kept_queue_status(self, queue: str) -> tuple[int, int]:
        try:
            if self._reader is None:
                self._reader = self.celery.connection_for_read()
                self._reader.ensure_connection(max_retries=1, timeout=self.settings.api_dependency_timeout)
            return queue_status(self._reader, queue)
        except self.errors:
            if self._reader is not None:
                self._reader.collect()
            self._reader = None
            raise

    def queue_consumers(self) -> dict[str, str]:
        """For each queue a task goes to: "ok", or "no consumer" (its tasks wait until a pool starts).

        "unknown" when the broker cannot say: down, or the embedded one, which counts no consumers.
        """
        if not self.settings.broker_is_amqp:
            return dict.fromkeys(self.catalogue.queues, "unknown")
        found = {}
        for name in self.catalogue.queues:
            try:
                found[name] = "ok" if self.queue_status(name)[1] else "no consumer"
            except DependencyUnavailable:
                found[name] = "unknown"
        return found

    # -- helpers -----------------------------------------------------------

    def wait(self, task_id: str, seconds: float) -> dict[str, Any] | None:
        """The task's view once it is final, or as it stands after ``seconds``.

        Driven by the result store's notification (Celery's Redis backend
        publishes every state it stores on the task's key), not by polling.
        Raises ``TooManyWaits`` past ``API_MAX_WAITS`` in this process.
        """
        view = None
        with contextlib.closing(self.watch(task_id, seconds)) as views:
            for view in views:
                if view is None or view["state"] in states.READY_STATES:
                    return view
        return self.describe(task_id) if view is not None else None

    def watch(self, task_id: str, seconds: float, keepalive: float | None = None) -> Watch:
        """The task's view now, then again at each state it stores, for up to ``seconds``.

        Ends after a final state, when the time is up, or at once for an
        unknown id (None).  With ``keepalive``, ``KEEPALIVE`` is yielded after
        that many quiet seconds, so a stream notices a client that went
        away.  One Redis pub/sub connection and one of this process's
        ``API_MAX_WAITS`` slots per watch, taken now (``TooManyWaits`` when
        none is free, ``RedisRequired`` on the embedded store) and given back
        by ``close()``.
        """
        subscribers = self._subscribers()
        if not self._watch_slots.acquire(blocking=False):
            raise TooManyWaits(f"this process holds {self.settings.api_max_waits} waits and streams (API_MAX_WAITS)")
        self._watching_changed(+1)
        views = self._views(subscribers, task_id, seconds, keepalive)
        return Watch(views, lambda: (self._watch_slots.release(), self._watching_changed(-1)))

    def _views(
        self, subscribers: Subscribers, task_id: str, seconds: float, keepalive: float | None
    ) -> Iterator[dict[str, Any] | None | object]:
        """The views of ``watch``; a subscription the store dropped is made again until the deadline.

        A failover (Sentinel, a managed Redis) drops the pub/sub connection:
        the watch subscribes again (to the new master) and reads the state
        again, so a waiting client still gets its answer.  Only a store that
        does not answer the first read is an error (503).
        """
        deadline = time.monotonic() + seconds
        shown: dict[str, Any] | None = None
        first = True
        while True:
            try:
                with subscribers.subscribed(self._result_key(task_id)) as channel:
                    channel.confirm(self.settings.api_dependency_timeout)  # subscribed: nothing is missed now
                    view = self.describe(task_id)
                    if first or view != shown:
                        first, shown = False, view
                        yield view
                    while view is not None and view["state"] not in states.READY_STATES:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return
                        if channel.message(min(remaining, keepalive or remaining)) is not None:
                            view = shown = self.describe(task_id)
                            yield view
                        elif keepalive and deadline - time.monotonic() > 0:
                            yield KEEPALIVE
                    return
            except (*self.errors, DependencyUnavailable) as exc:
                if first and isinstance(exc, DependencyUnavailable):
                    raise
                if first:
                    raise DependencyUnavailable("result backend", exc) from exc
                if time.monotonic() + RESUBSCRIBE_SECONDS >= deadline:
                    return
                time.sleep(RESUBSCRIBE_SECONDS)  # the store is failing over: try again shortly

    def _watching_changed(self, by: int) -> None:
        self.watching += by
        if self.on_watching is not None:
            self.on_watching(self.watching)

    def _redis(self) -> Any:
        redis = getattr(self.celery.backend, "client", None)
        if redis is None:
            raise RedisRequired(
                "this needs Redis as the result store: the embedded file store (./dev.sh up --embedded, or no "
                "RabbitMQ/Redis found) keeps no index nor notifications, so listing, ?wait=, events and "
                "retries answer 501 there"
            )
        return redis

    def _subscribers(self) -> Subscribers:
        if self._kept_subscribers is None:
            self._kept_subscribers = Subscribers(self._redis(), keep=min(KEEP, self.settings.api_max_waits))
        return self._kept_subscribers

    def _result_key(self, task_id: str) -> Any:
        return self.celery.backend.get_key_for_task(task_id)

    def _record_key(self, task_id: str) -> Any:
        return self.celery.backend.key_t(RECORD_PREFIX + task_id)

    def _retried_key(self, task_id: str) -> Any:
        return self.celery.backend.key_t(RETRIED_PREFIX + task_id)

    @contextlib.contextmanager
    def _unavailable(self, dependency: str) -> Iterator[None]:
        """A "server down" error inside the block becomes ``DependencyUnavailable``."""
        try:
            yield
        except self.errors as exc:
            raise DependencyUnavailable(dependency, exc, self.where.get(dependency, "")) from exc


def queue_status(connection: Any, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue`` by a passive declare, on a channel of its own.

    A queue no one declared yet counts (0, 0); the broker closes the channel
    that asked (404), so the connection's other channels are not touched.
    """
    channel = connection.channel()
    try:
        declared = channel.queue_declare(queue, passive=True)
        return declared.message_count, declared.consumer_count
    except connection.channel_errors:
        return 0, 0
    finally:
        with contextlib.suppress(*connection.connection_errors, *connection.channel_errors):
            channel.close()


def address(url: str) -> str:
    """Where a broker or result store URL points, without credentials: ``host:port``, or a folder."""
    places = []
    for part in url.split(";"):  # kombu's failover URLs: amqp://a;amqp://b
        parts = urlsplit(part.strip())
        host = parts.hostname
        if host:
            host = f"[{host}]" if ":" in host else host
            places.append(f"{host}:{parts.port}" if parts.port else host)
        else:
            places.append(parts.path or part.split("://", 1)[0])
    return ", ".join(places)


def _dependency_errors(app: Celery) -> tuple[type[BaseException], ...]:
    """Exceptions that mean "a server is down or slow", not "a bug here"."""
    with app.connection_for_write() as connection:
        broker = tuple(connection.connection_errors) + tuple(connection.channel_errors)
    backend = tuple(getattr(app.backend, "connection_errors", ()))
    # A full or read-only Redis answers, but refuses writes: an outage too.
    return (OperationalError, OSError, socket.timeout, *broker, *backend, *REFUSING_WRITES)


def _reason(cause: BaseException) -> str:
    if isinstance(cause, BrokerBlocked):
        return "blocked"
    if isinstance(cause, OutOfMemoryError):
        return "full"
    if isinstance(cause, ReadOnlyError):
        return "read_only"
    return "down"


def _isoformat(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def _exc_message(result: Mapping[str, Any]) -> str:
    message = result.get("exc_message")
    if isinstance(message, list | tuple):
        return " ".join(str(part) for part in message)
    return str(message or "")
