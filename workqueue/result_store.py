"""Celery's Redis result backend, storing a task's state in one round trip.

Before every write Celery's backend reads the stored state, so that a late
copy of a task (a redelivery after a lost worker) never overwrites SUCCESS:
a GET, then a MULTI/SET/PUBLISH/EXEC, i.e. two round trips per state and
four per task with STARTED tracked, which is most of what a short task
costs the worker (bench/README.md, "Worker drain rate").  Here one Lua
script does the same check, the write and the PUBLISH that wakes waiting
clients, atomically: the check can no longer race with the write either.

It also leaves the task's arguments out of the stored state: the API's
submission record holds them already (``TaskClient``), and with large
arguments they were encoded and written twice more per task.  The other
``result_extended`` fields (name, worker, retries, queue) stay.

``create_celery`` selects it for ``redis://`` and ``rediss://`` result
stores; reads are Celery's own.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

# KEYS[1]: the task's key (also the channel clients wait on).
# ARGV[1]: the encoded state, ARGV[2]: seconds to keep it (0: forever).
# Returns 0 when a SUCCESS is stored already and was kept.
STORE_UNLESS_SUCCEEDED = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
end
local seconds = tonumber(ARGV[2])
if seconds > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', seconds)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""

BACKEND_CLASS = f"{__name__}:ResultStore"


def use_for(app: Celery, url: str) -> None:
    """Make ``app`` store results with ``ResultStore`` when ``url`` is a Redis one.

    As the app's backend class, not a ``result_backend`` URL form: the
    ``celery`` command sets ``result_backend`` from the RESULT_BACKEND
    variable (our setting's name too), which would replace such a URL.
    """
    if url.partition("://")[0] in ("redis", "rediss"):
        app.backend_cls = BACKEND_CLASS


class ResultStore(RedisBackend):
    """Celery's ``RedisBackend`` with a one-round-trip, race-free ``_store_result``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Celery passes no URL for a backend class: the app's setting has it.
        kwargs["url"] = kwargs.get("url") or kwargs["app"].conf.result_backend
        super().__init__(*args, **kwargs)
        self._store_script = self.client.register_script(STORE_UNLESS_SUCCEEDED)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state, task_id=task_id)
        expires = (self.failure_expires if state == states.FAILURE else None) or self.expires
        key = self.get_key_for_task(task_id)
        # Retried on connection errors like every write of Celery's backend
        # (result_backend_always_retry): the task ran, its state must land.
        self.ensure(self._store_script, ([key], [value, int(expires or 0)]))
        return result

    def _get_result_meta(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        meta = super()._get_result_meta(*args, **kwargs)
        meta.pop("args", None)  # in the submission record (result_extended)
        meta.pop("kwargs", None)
        return meta
