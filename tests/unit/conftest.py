"""Fixtures of the unit tests: the API over an in-memory stand-in for ``TaskClient``, no server anywhere.

In the manner of Flask's tutorial: ``app`` is ``create_app`` with test
settings, ``client`` its test client.  ``create_app`` takes the
``TaskClient`` it uses; here it is given ``task_client``, a
``MemoryTaskClient`` that keeps tasks, submission records and idempotency
keys in plain dicts.  It stands in for the stores (RabbitMQ and Redis)
only, never for the code under test: the views, the error mapping, the
tokens, the document and the dashboard's access rules are the real ones.
Tell it to raise what the real client raises when a server is down or
refuses::

    task_client.fail("submit", DependencyUnavailable("broker", BrokerBlocked("memory"), "mq:5672"))

Every test here runs in milliseconds; what needs RabbitMQ, Redis or a
process is in ``tests/integration/`` (fixtures in ``tests/conftest.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from celery import states
from flask import Flask
from flask.testing import FlaskClient
from redis.exceptions import ConnectionError as RedisConnectionError

from api.app import create_app
from workqueue import catalogue, index
from workqueue.catalogue import TaskDefinition
from workqueue.client import IdempotencyConflict, RetryRefused, TaskClient, Watch
from workqueue.idempotency import fingerprint
from workqueue.settings import Settings

# Addresses where nothing listens: a test that reached a real server by mistake fails at once.
NOWHERE_BROKER, NOWHERE_BACKEND = "amqp://guest:guest@127.0.0.1:9//", "redis://127.0.0.1:9/0"


class MemoryRedis:
    """The few Redis commands the dashboard's sessions use, on a dict; ``down`` makes each raise like redis-py."""

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:9. Connection refused.")

    def set(self, key: Any, value: Any, nx: bool = False, ex: int | None = None) -> bool:
        self._check()
        if nx and key in self.values:
            return False
        self.values[key] = value.encode() if isinstance(value, str) else value
        return True

    def get(self, key: Any) -> Any:
        self._check()
        return self.values.get(key)

    def exists(self, key: Any) -> int:
        self._check()
        return int(key in self.values)


class MemoryBulk:
    """``BulkActions``' three calls, recorded; a cursor is decoded as the real one does (``BadCursor``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.entries: list[dict[str, Any]] = []
        self.failures: dict[str, BaseException] = {}

    def fail(self, method: str, exc: BaseException) -> None:
        self.failures[method] = exc

    def retry_failed(self, task: str, since: float, who: str, cursor: str | None, limit: int) -> dict[str, Any]:
        return self._act("retry_failed", task=task, since=since, who=who, cursor=cursor, limit=limit)

    def revoke_queued(self, task: str, who: str, since: float | None, cursor: str | None, limit: int) -> dict[str, Any]:
        return self._act("revoke_queued", task=task, since=since, who=who, cursor=cursor, limit=limit)

    def log(self, count: int) -> list[dict[str, Any]]:
        self.calls.append(("log", {"count": count}))
        if "log" in self.failures:
            raise self.failures["log"]
        return self.entries[:count]

    def _act(self, action: str, **call: Any) -> dict[str, Any]:
        if call["cursor"] is not None:
            index.decode_cursor(call["cursor"])
        self.calls.append((action, call))
        if action in self.failures:
            raise self.failures[action]
        since = call["since"]
        entry = {
            "action": action, "task": call["task"], "who": call["who"], "at": _now(), "scanned": 0, "matched": 0,
            "acted": 0, "skipped": {}, "cursor": call["cursor"], "next_cursor": None,
            "since": None if since is None else dt.datetime.fromtimestamp(since, dt.UTC).isoformat(),
        }  # fmt: skip
        self.entries.insert(0, entry)
        return {**entry, "tasks": []}


class MemoryTaskClient:
    """What the API calls of ``TaskClient``, over dicts; ``fail(method, exc)`` makes a call raise ``exc``."""

    # The real client's own helpers, which only map errors and find Redis: not the stores.
    _unavailable = TaskClient._unavailable
    _redis = TaskClient._redis

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalogue = catalogue.for_settings(settings)
        self.views: dict[str, dict[str, Any]] = {}  # what describe answers, in submission order
        self.records: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, tuple[str, str]] = {}  # idempotency key -> (task id, fingerprint)
        self.revoked: list[str] = []
        self.failures: dict[str, BaseException] = {}
        self.failing_times: dict[str, int] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.timelines: dict[str, list[Any]] = {}  # what a watch yields, when told
        self.released = 0  # watches closed (their slot given back)
        self.readiness: tuple[dict[str, str], dict[str, str]] = ({"broker": "ok", "result_backend": "ok"}, {})
        self.redis = MemoryRedis()
        self.celery = SimpleNamespace(backend=SimpleNamespace(client=self.redis, key_t=lambda name: name))
        self.errors: tuple[type[BaseException], ...] = (RedisConnectionError,)
        self.where = {"broker": "127.0.0.1:9", "result backend": "127.0.0.1:9"}
        self.on_watching: Callable[[int], None] | None = None

    # -- telling it what to hold and what to raise ----------------------------

    def fail(self, method: str, exc: BaseException, times: int | None = None) -> None:
        """Make ``method`` raise ``exc`` from now on, or only its next ``times`` calls."""
        self.failures[method] = exc
        if times is not None:
            self.failing_times[method] = times

    def without_redis(self) -> None:
        """As on the embedded file store: no Redis client (``RedisRequired`` where Redis is needed)."""
        self.celery.backend.client = None

    def add(self, task: str = "add", state: str = states.PENDING, kwargs: Mapping[str, Any] | None = None,
            **extra: Any) -> str:  # fmt: skip
        """A task as if submitted earlier and now in ``state``; its id."""
        task_id = str(uuid.uuid4())
        self.records[task_id] = {"task": task, "submitted_at": _now(), "kwargs": dict(kwargs or {"x": 1, "y": 2})}
        self.views[task_id] = {
            "id": task_id, "task": task, "state": state, "retries": 0, "submitted_at": _now(),
            "completed_at": _now() if state in states.READY_STATES else None, **extra,
        }  # fmt: skip
        return task_id

    def _call(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        if method in self.failures:
            exc = self.failures[method]
            if method in self.failing_times:
                self.failing_times[method] -= 1
                if not self.failing_times[method]:
                    del self.failures[method], self.failing_times[method]
            raise exc

    # -- TaskClient's calls -----------------------------------------------------

    def submit(self, task: str | TaskDefinition, kwargs: Mapping[str, Any], task_id: str | None = None,
               retry_of: str | None = None) -> str:  # fmt: skip
        self._call("submit", task, dict(kwargs))
        name = task if isinstance(task, str) else task.name
        extra = {"retry_of": retry_of} if retry_of else {}
        new_id = self.add(name, kwargs=kwargs, **extra)
        if task_id:
            self.views[task_id] = {**self.views.pop(new_id), "id": task_id}
            self.records[task_id] = self.records.pop(new_id)
            return task_id
        return new_id

    def submit_once(self, task: TaskDefinition, kwargs: Mapping[str, Any], key: str) -> tuple[str, bool]:
        self._call("submit_once", task, dict(kwargs), key)
        known = self.keys.get(key)
        if known is not None:
            if known[1] != fingerprint(task.name, kwargs):
                raise IdempotencyConflict("mismatch", known[0])
            return known[0], True
        task_id = self.add(task.name, kwargs=kwargs)
        self.keys[key] = (task_id, fingerprint(task.name, kwargs))
        return task_id, False

    def describe(self, task_id: str) -> dict[str, Any] | None:
        self._call("describe", task_id)
        view = self.views.get(task_id)
        return dict(view) if view is not None else None

    def describe_many(self, task_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        self._call("describe_many", list(task_ids))
        return {i: dict(self.views[i]) if i in self.views else None for i in task_ids}

    def record(self, task_id: str) -> dict[str, Any] | None:
        self._call("record", task_id)
        return self.records.get(task_id)

    def wait(self, task_id: str, seconds: float) -> dict[str, Any] | None:
        self._call("wait", task_id, seconds)
        return self.describe(task_id)

    def watch(self, task_id: str, seconds: float, keepalive: float | None = None) -> Watch:
        self._call("watch", task_id, seconds, keepalive)
        timeline = self.timelines.get(task_id, [self.views.get(task_id)])

        def release() -> None:
            self.released += 1

        return Watch((view for view in timeline), release)  # a generator, as the real views are

    def retry(self, task_id: str) -> str:
        self._call("retry", task_id)
        view = self.views.get(task_id)
        if view is None:
            raise RetryRefused("unknown", f"no task {task_id} with recorded arguments (or it expired)")
        if view["state"] not in (states.FAILURE, states.REVOKED):
            raise RetryRefused(
                "not_failed", f"task {task_id} is {view['state']}: only FAILURE or REVOKED can be retried"
            )
        if "retried_by" in view:
            raise RetryRefused("already_retried", f"task {task_id} was already retried")
        record = self.records[task_id]
        new_id = self.submit(record["task"], record["kwargs"], retry_of=task_id)
        view["retried_by"] = new_id
        return new_id

    def revoke(self, task_id: str) -> None:
        self._call("revoke", task_id)
        self.revoked.append(task_id)

    def list_tasks(self, state: str | None = None, task: str | None = None, cursor: str | None = None,
                   limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
        """Newest first; a position is a task's place in submission order, in the real cursor's encoding."""
        self._call("list_tasks", state, task, cursor, limit)
        self._redis()
        ordered = list(self.views)[::-1]
        start = 0
        if cursor:
            score, after = index.decode_cursor(cursor)
            start = ordered.index(after) + 1 if after in ordered else len(ordered)
        chosen = [
            i for i in ordered[start:] if (state is None or self.views[i]["state"] == state)
            and (task is None or self.views[i]["task"] == task)
        ]  # fmt: skip
        page = chosen[:limit]
        more = len(chosen) > limit
        return [dict(self.views[i]) for i in page], index.encode_cursor(len(page), page[-1]) if more else None

    def status(self) -> tuple[dict[str, str], dict[str, str]]:
        self._call("status")
        return self.readiness


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    """Settings of an open API (``API_AUTH=off``) whose servers are nowhere."""
    return Settings(
        broker_url=NOWHERE_BROKER, result_backend=NOWHERE_BACKEND, runtime_dir=str(tmp_path), api_auth="off"
    ).validated()


@pytest.fixture
def task_client(settings: Settings) -> MemoryTaskClient:
    """The stand-in the app is given: its dicts are the stores."""
    return MemoryTaskClient(settings)


@pytest.fixture
def make_app(settings: Settings, task_client: MemoryTaskClient) -> Callable[..., Flask]:
    """``create_app`` over ``task_client``; keyword arguments override settings (``api_auth="required"``, tokens)."""

    def make(**overrides: Any) -> Flask:
        app = create_app(dataclasses.replace(settings, **overrides).validated(), client=task_client, TESTING=True)
        app.extensions["workqueue-bulk"] = MemoryBulk()  # what api/bulk.py would build over Redis
        return app

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    """The open API (``API_AUTH=off``) over the stand-in."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """The app's test client (Flask's name for it)."""
    return app.test_client()
