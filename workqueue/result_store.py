"""Celery's Redis result backend: one round trip per state, final states final, outages waited out.

Before every write Celery's backend reads the stored state, so that a late
copy of a task (a redelivery after a lost worker) never overwrites SUCCESS:
a GET, then a MULTI/SET/PUBLISH/EXEC, i.e. two round trips per state and
four per task with STARTED tracked, which is most of what a short task
costs the worker (bench/README.md, "Worker drain rate").  Here one Lua
script does the check, the write and the PUBLISH that wakes waiting
clients, atomically: the check can no longer race with the write either.
It keeps every final state, not only SUCCESS: a copy of a task whose
FAILURE or REVOKED is stored must not turn it into something else.

A store that cannot be written is an outage, not a lost result.  Redis
answers some outages with errors that are not connection errors: ``OOM``
(``maxmemory`` with ``noeviction``, the chart's setting) and ``READONLY``
(a replica, after a failover).  Inside a running task every state that
matters (STARTED and the final ones) is retried with backoff until Redis
accepts it; when the task's hard time limit comes near first, the message
is rejected back to the queue (``Reject(requeue=True)``), never
acknowledged without its state.  Progress reports are best effort: one
attempt, then the task goes on.

It also leaves the task's arguments out of the stored state: the API's
submission record holds them already (``TaskClient``), and with large
arguments they were encoded and written twice more per task.  The other
``result_extended`` fields (name, worker, retries, queue) stay.

``create_celery`` selects it for ``redis://`` and ``rediss://`` result
stores; reads are Celery's own.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery, states
from celery.backends.redis import RedisBackend, SentinelBackend
from celery.exceptions import BackendStoreError, Reject, SoftTimeLimitExceeded
from kombu.utils.encoding import bytes_to_str
from redis import BlockingConnectionPool
from redis.exceptions import OutOfMemoryError, ReadOnlyError

from workqueue import throughput
from workqueue.started_state import DeferredStarted

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Redis is up but refuses writes: full (maxmemory + noeviction) or a read-only replica.
REFUSING_WRITES: tuple[type[Exception], ...] = (OutOfMemoryError, ReadOnlyError)

# States a worker must not lose: a task without them looks queued or running for ever.
ESSENTIAL = frozenset({states.STARTED, states.RETRY, *states.READY_STATES})

# The attributes ``note_start`` sets on a running task's request (monotonic
# seconds, for the time limit; epoch seconds, shown as ``started_at``).
STARTED_AT = "workqueue_started_monotonic"
STARTED_WALL = "workqueue_started_at"
# The header the API's publisher stamps on a message (epoch seconds).
SUBMITTED_HEADER = "workqueue_submitted_at"

# KEYS[1]: the task's key (also the channel clients wait on); KEYS[2], when
# given: this minute's counters (workqueue/throughput.py).
# ARGV[1]: the encoded state, ARGV[2]: seconds to keep it (0: forever);
# with KEYS[2], ARGV[3]: seconds to keep the counters, ARGV[4...]: the
# fields to increment, counted only when the state was stored.
# Returns 0 when a final state is stored already and was kept.
STORE_UNLESS_FINAL = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' then
    local status = meta['status']
    if status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED' then
      return 0
    end
  end
end
local seconds = tonumber(ARGV[2])
if seconds > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', seconds)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
if KEYS[2] then
  for i = 4, #ARGV do
    redis.call('HINCRBY', KEYS[2], ARGV[i], 1)
  end
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return 1
"""

BACKEND_CLASSES = {
    "redis": f"{__name__}:ResultStore",
    "rediss": f"{__name__}:ResultStore",
    "sentinel": f"{__name__}:SentinelResultStore",
}

# Backoff between attempts while the store refuses or is down.
FIRST_DELAY, MAX_DELAY = 0.05, 2.0
# Give up this long before the task's hard time limit (the limit kills the
# process and acknowledges the message: the requeue must come first).
TIME_LIMIT_MARGIN = 5.0


def use_for(app: Celery, url: str) -> None:
    """Make ``app`` store results with ``ResultStore`` when ``url`` is a Redis one.

    As the app's backend class, not a ``result_backend`` URL form: the
    ``celery`` command sets ``result_backend`` from the RESULT_BACKEND
    variable (our setting's name too), which would replace such a URL.
    """
    backend_class = BACKEND_CLASSES.get(url.partition("://")[0])
    if backend_class:
        app.backend_cls = backend_class


def note_start(task: Any = None, **_: Any) -> None:
    """``task_prerun`` receiver: when the running task started, for its time-limit deadline."""
    if task is not None:
        setattr(task.request, STARTED_AT, time.monotonic())
        setattr(task.request, STARTED_WALL, time.time())


class _OneRoundTrip:
    """What ``ResultStore`` and ``SentinelResultStore`` add to Celery's Redis backends."""

    app: Celery
    client: Any
    connection_errors: tuple[type[BaseException], ...]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Celery passes no URL for a backend class: the app's setting has it.
        conf = kwargs["app"].conf
        kwargs["url"] = kwargs.get("url") or conf.result_backend
        if conf.get("redis_max_connections") and kwargs.get("connection_pool") is None:
            # A capped pool (the API's): a request waits briefly for a free
            # connection instead of failing at once when all are in use.
            kwargs["connection_pool"] = functools.partial(
                BlockingConnectionPool, timeout=conf.get("redis_socket_timeout") or 1.0
            )
        super().__init__(*args, **kwargs)
        self._store_script = self.client.register_script(STORE_UNLESS_FINAL)
        delay = conf.get("workqueue_started_delay") or 0
        self._deferred = DeferredStarted(delay, self.exception_safe_to_retry) if delay > 0 else None

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        # Celery's loop (outside tasks) retries these too: a full or read-only
        # Redis clears like a dropped connection does.
        return isinstance(exc, (*self.connection_errors, *REFUSING_WRITES))

    def store_result(
        self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None, **kwargs: Any
    ) -> Any:
        started = getattr(request, STARTED_AT, None) if request is not None else None
        if started is None:
            # Not inside a running task (the worker's main process: a revoke on
            # receipt, a hard time limit): Celery's bounded retries.
            return super().store_result(task_id, result, state, traceback, request=request, **kwargs)
        result = self.encode_result(result, state)
        if self._deferred is not None:
            # STARTED waits for the delay; any later state of the attempt settles it first.
            kwargs["started_stored"] = state == states.STARTED or self._deferred.settle(task_id)
        write = functools.partial(self._store_result, task_id, result, state, traceback, request=request, **kwargs)
        if self._deferred is not None and state == states.STARTED:
            self._deferred.defer(task_id, write)
            return result
        if state not in ESSENTIAL:
            try:
                write()
            except Exception as exc:
                if not self.exception_safe_to_retry(exc):
                    raise
                logger.warning("task %s: %s not stored (%s); the task goes on", task_id, state, _brief(exc))
            return result
        self.write_in_task(request, f"task {task_id}: {state}", write)
        return result

    def write_in_task(self, request: Any, what: str, write: Callable[[], T]) -> T:
        """``write()``, retried while Redis is down, full or read-only; requeue before the time limit.

        For writes a running task cannot do without: its STARTED and final
        states, its delivery count.  Raises ``Reject(requeue=True)`` when the
        task's hard time limit would come first.
        """
        started = getattr(request, STARTED_AT, None) or time.monotonic()
        limit = (getattr(request, "timelimit", None) or (None, None))[0] or self.app.conf.task_time_limit
        deadline = started + limit - min(TIME_LIMIT_MARGIN, limit / 10) if limit else None
        delay, warned_at = FIRST_DELAY, None
        while True:
            try:
                return write()
            except SoftTimeLimitExceeded:
                continue  # the limit is the body's; this write comes after it
            except Exception as exc:
                if not self.exception_safe_to_retry(exc):
                    raise
                now = time.monotonic()
                if deadline is not None and now + delay > deadline:
                    logger.error("%s not stored before the time limit (%s): message returned to the queue", what, exc)
                    raise Reject(f"result store unavailable: {_brief(exc)}", requeue=True) from exc
                if warned_at is None or now - warned_at > 30:
                    logger.warning("%s not stored yet (%s): retrying until the result store accepts it", what, exc)
                    warned_at = now
            try:
                time.sleep(delay)
            except SoftTimeLimitExceeded:
                pass
            delay = min(delay * 2, MAX_DELAY)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        started_stored: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state, task_id=task_id)
        expires = (self.failure_expires if state == states.FAILURE else None) or self.expires
        key = self.get_key_for_task(task_id)
        keys, args = [key], [value, int(expires or 0)]
        counted = throughput.fields_for(state, *self._queue_wait(state, request, started_stored))
        if counted:  # this minute's counters, in the same round trip
            keys.append(self.key_t(throughput.key_name(throughput.minute_of(time.time()))))
            args += [throughput.KEEP_SECONDS, *counted]
        # One attempt: the callers above retry (a nested retry loop would
        # multiply the waits).
        self._store_script(keys=keys, args=args)
        return result

    def _queue_wait(self, state: str, request: Any, started_stored: bool | None) -> tuple[str | None, float | None]:
        """(queue, seconds from submission to start) when this state is where a first attempt's wait counts.

        Counted once per task: at STARTED, or, when no STARTED was stored
        (not tracked, or the task ended within TASK_STARTED_DELAY), at the
        state that ends the attempt; on a first attempt that is no
        redelivery, of a message the API stamped.  ``started_stored`` None:
        as tracked (STARTED stored before the task ran).
        """
        if request is None or getattr(request, "retries", 0):
            return None, None
        if started_stored is None:
            started_stored = self.app.conf.task_track_started
        ends_attempt = state in states.READY_STATES or state == states.RETRY
        if not (state == states.STARTED or (ends_attempt and not started_stored)):
            return None, None
        delivery = getattr(request, "delivery_info", None) or {}
        submitted, started = getattr(request, SUBMITTED_HEADER, None), getattr(request, STARTED_WALL, None)
        if delivery.get("redelivered") or not isinstance(submitted, int | float) or started is None:
            return None, None
        return delivery.get("routing_key") or "celery", max(0.0, started - submitted)

    def _get_result_meta(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        meta = super()._get_result_meta(*args, **kwargs)  # type: ignore[misc]
        meta.pop("args", None)  # in the submission record (result_extended)
        meta.pop("kwargs", None)
        request = kwargs.get("request", args[3] if len(args) > 3 else None)
        started = getattr(request, STARTED_WALL, None)
        if started is not None:  # this attempt's start, for the dashboard's timings
            meta["started_at"] = dt.datetime.fromtimestamp(started, dt.UTC).isoformat()
        return meta


class ResultStore(_OneRoundTrip, RedisBackend):
    """Celery's ``RedisBackend`` with a one-round-trip, race-free store that waits out outages."""


class SentinelResultStore(_OneRoundTrip, SentinelBackend):
    """The same over Redis Sentinel: every connection goes to the master the sentinels name."""


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
