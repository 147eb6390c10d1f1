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
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from celery import Celery, states
from kombu.exceptions import OperationalError

from workqueue import catalogue, index
from workqueue.catalogue import Catalogue, TaskDefinition
from workqueue.celery_app import DEFAULT_QUEUE, close_celery, create_celery, make_queue
from workqueue.idempotency import ACCEPTED, PUBLISHING, UNCONFIRMED, Claim, IdempotencyKeys, fingerprint
from workqueue.publisher import BrokerBlocked, NotPublished, Publisher, PublishUnconfirmed
from workqueue.revocations import Revocations
from workqueue.settings import Settings
from workqueue.subscriptions import Subscribers

__all__ = ["DependencyUnavailable", "IdempotencyConflict", "PublishUnconfirmed", "TaskClient"]

RECORD_PREFIX = "workqueue-submitted-"
RETRIED_PREFIX = "workqueue-retried-"
# Keys per MGET when reading many tasks at once.
READ_BATCH = 1000
# Listing reads of each submission record its start (task name, submission
# time) and its end (retry_of), never the arguments between (up to 256 KB
# each, which a list does not show): see ``_listed_views``.
LISTED_HEAD, LISTED_TAIL = 512, 64
_RECORD_HEAD = re.compile(r'\{"task": ("(?:[^"\\]|\\.)*"), "submitted_at": ("[^"\\]*")')
_RECORD_TAIL = re.compile(r', "retry_of": ("[0-9a-f-]{36}")\}$')


class DependencyUnavailable(RuntimeError):
    """The broker or the result store did not answer in time."""

    def __init__(self, dependency: str, cause: BaseException) -> None:
        super().__init__(f"{dependency} unavailable: {type(cause).__name__}: {cause}")
        self.dependency = dependency
        # RabbitMQ up but refusing publishers (memory or disk alarm).
        self.blocked = isinstance(cause, BrokerBlocked)


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
            self.celery, self.errors, settings.api_dependency_timeout, amqp=settings.broker_is_amqp, settings=settings
        )
        self.idempotency = IdempotencyKeys(self.celery.backend, settings.result_expires)
        self.revocations = Revocations(self.celery.backend, settings.result_expires)
        self.index = index.TaskIndex(self.celery.backend, settings.result_expires)
        self._kept_subscribers: Subscribers | None = None  # made on the first wait (Redis only)

    def close(self) -> None:
        self.publisher.close()
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
        store or the broker is down, or the broker blocks publishers), and
        ``PublishUnconfirmed`` when the message was written but not confirmed
        in time (its record stays: ``describe`` shows it PENDING).
        """
        definition = self.catalogue[task] if isinstance(task, str) else task
        task_id = task_id or str(uuid.uuid4())
        now = time.time()
        # The arguments stay with the record: a retry resubmits them.
        record = {"task": definition.name, "submitted_at": _isoformat(now), "kwargs": dict(kwargs)}
        if retry_of:
            record["retry_of"] = retry_of
        key = self._record_key(task_id)
        with self._unavailable("result backend"):
            self._store_record(key, json.dumps(record), task_id, definition.name, now)
        try:
            queue = self._queues.get(definition.queue) or make_queue(self.settings, definition.queue)
            self.publisher.publish(definition.celery_name, task_id, dict(kwargs), queue)
        except (BrokerBlocked, NotPublished) as exc:
            self._forget(key)
            raise DependencyUnavailable("broker", exc) from exc
        return task_id

    def submit_once(self, task: TaskDefinition, kwargs: Mapping[str, Any], idempotency_key: str) -> tuple[str, bool]:
        """``submit`` under an idempotency key: ``(task id, replayed)``.

        The first request with a key submits (``replayed`` False); a later one
        with the same task and arguments gets the same id back (``replayed``
        True).  Raises ``IdempotencyConflict`` when the key came with another
        request (``mismatch``) or its first request is still publishing
        (``in_progress``).  A request that queued nothing frees its key.
        """
        claim = Claim(str(uuid.uuid4()), fingerprint(task.name, kwargs), PUBLISHING)
        with self._unavailable("result backend"):
            existing = self.idempotency.claim(idempotency_key, claim)
        if existing is not None:
            if existing.fingerprint != claim.fingerprint:
                raise IdempotencyConflict("mismatch", existing.task_id)
            if existing.state == PUBLISHING:
                raise IdempotencyConflict("in_progress", existing.task_id)
            return existing.task_id, True
        try:
            self.submit(task, kwargs, task_id=claim.task_id)
        except PublishUnconfirmed:
            self._settle(idempotency_key, claim, UNCONFIRMED)
            raise
        except DependencyUnavailable:
            with contextlib.suppress(*self.errors):
                self.idempotency.release(idempotency_key)
            raise
        self._settle(idempotency_key, claim, ACCEPTED)
        return claim.task_id, False

    def _settle(self, key: str, claim: Claim, state: str) -> None:
        # The task is queued (or may be): if Redis fails now, the claim stays
        # "publishing" until it expires, which refuses retries (409) rather
        # than making a second task.
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
            with self._unavailable("result backend"):
                raws = list(backend.mget(keys))
            for at, task_id in enumerate(chunk):
                views[task_id] = self._view(task_id, raws[at], raws[n + at], raws[2 * n + at])
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
        """The record's name, time and retry_of as a small JSON object (None: no record)."""
        if not head:
            return None
        found = _RECORD_HEAD.match(head.decode("utf-8", "replace"))
        if found is None:  # not the layout submit writes: read it all
            return self.celery.backend.get(self._record_key(task_id))
        summary = {"task": json.loads(found[1]), "submitted_at": json.loads(found[2])}
        retry_of = _RECORD_TAIL.search(tail.decode("utf-8", "replace"))
        if retry_of:
            summary["retry_of"] = json.loads(retry_of[1])
        return json.dumps(summary)

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
        kwargs = definition.bind((), record["kwargs"])
        new_id = str(uuid.uuid4())
        with self._unavailable("result backend"):
            # SET NX: concurrent retries of one task make one new task.
            if not redis.set(self._retried_key(task_id), new_id, nx=True, ex=self.settings.result_expires):
                raise RetryRefused("already_retried", f"task {task_id} was already retried")
        try:
            return self.submit(definition, kwargs, task_id=new_id, retry_of=task_id)
        except DependencyUnavailable:
            with contextlib.suppress(*self.errors):
                self.celery.backend.delete(self._retried_key(task_id))
            raise

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
            raise DependencyUnavailable("broker", exc) from exc

    def check_result_store(self) -> None:
        """One round trip to the result store (the key need not exist)."""
        backend = self.celery.backend
        with self._unavailable("result backend"):
            backend.get(backend.key_t("workqueue-ping"))

    def readiness(self) -> dict[str, str]:
        """``{"broker": "ok" | "unavailable: <why>", "result_backend": ...}``."""
        checks = {}
        for name, check in (("broker", self.check_broker), ("result_backend", self.check_result_store)):
            try:
                check()
                checks[name] = "ok"
            except DependencyUnavailable as exc:
                cause = exc.__cause__
                checks[name] = f"blocked: {cause}" if exc.blocked else f"unavailable: {type(cause).__name__}"
        return checks

    def queue_depth(self, queue: str = DEFAULT_QUEUE) -> int:
        """Messages ready in ``queue`` (a passive declare: never creates it)."""
        return self.queue_status(queue)[0]

    def queue_status(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of ``queue``; a queue not declared yet counts (0, 0)."""
        with self._unavailable("broker"), self.celery.connection_for_read() as connection:
            return queue_status(connection, queue)

    def queue_consumers(self) -> dict[str, str]:
        """For each queue a task goes to: "ok", or "no consumer" (its tasks wait until a pool starts)."""
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
        """
        view = None
        for view in self.watch(task_id, seconds):
            if view is None or view["state"] in states.READY_STATES:
                return view
        return self.describe(task_id) if view is not None else None

    def watch(self, task_id: str, seconds: float) -> Iterator[dict[str, Any] | None]:
        """The task's view now, then again at each state it stores, for up to ``seconds``.

        Ends after a final state, when the time is up, or at once for an
        unknown id (None).  One Redis pub/sub connection per watcher.
        """
        deadline = time.monotonic() + seconds
        with self._unavailable("result backend"), self._subscribers().subscribed(self._result_key(task_id)) as channel:
            channel.confirm(self.settings.api_dependency_timeout)  # subscribed: nothing is missed now
            view = self.describe(task_id)
            yield view
            while view is not None and view["state"] not in states.READY_STATES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if channel.message(remaining) is not None:
                    view = self.describe(task_id)
                    yield view

    def _redis(self) -> Any:
        redis = getattr(self.celery.backend, "client", None)
        if redis is None:
            raise RedisRequired("this needs Redis as the result store (the embedded store has no index)")
        return redis

    def _subscribers(self) -> Subscribers:
        if self._kept_subscribers is None:
            self._kept_subscribers = Subscribers(self._redis())
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
            raise DependencyUnavailable(dependency, exc) from exc


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


def _dependency_errors(app: Celery) -> tuple[type[BaseException], ...]:
    """Exceptions that mean "a server is down or slow", not "a bug here"."""
    with app.connection_for_write() as connection:
        broker = tuple(connection.connection_errors) + tuple(connection.channel_errors)
    backend = tuple(getattr(app.backend, "connection_errors", ()))
    return (OperationalError, OSError, socket.timeout, *broker, *backend)


def _isoformat(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def _exc_message(result: Mapping[str, Any]) -> str:
    message = result.get("exc_message")
    if isinstance(message, list | tuple):
        return " ".join(str(part) for part in message)
    return str(message or "")
