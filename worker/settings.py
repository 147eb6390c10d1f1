"""One typed settings object, read once from the environment.

Both the API and the worker build their clients from a ``Settings`` instance;
tests build one directly.  A missing or malformed value raises
``SettingsError`` whose message is one line naming the variable, so a pod
that is misconfigured says why in the first line of its log.

Run ``python -m worker.settings`` to check the environment without starting
anything (``run.sh`` does this before it execs the real process).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

T = TypeVar("T")

QUEUE_TYPES = ("classic", "quorum")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "filesystem", "memory")
BACKEND_SCHEMES = ("redis", "rediss", "file")


class SettingsError(ValueError):
    """A configuration value is missing or malformed (message names the variable)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the API and the worker read from the environment."""

    broker_url: str
    result_backend: str
    worker_debug_level: str = "info"
    # Worker process model.  Prefetch 1 keeps long tasks from queueing up
    # behind a busy process while other workers sit idle.
    worker_concurrency: int = 2
    worker_prefetch_multiplier: int = 1
    worker_max_tasks_per_child: int = 1000
    worker_max_memory_per_child_kb: int = 400_000
    # Time limits must stay below RabbitMQ's consumer_timeout (30 min by
    # default; deploy/ sets it to 35 min): an unacked delivery older than
    # that is cancelled by the broker (celery/celery#6760).
    task_soft_time_limit: int = 540
    task_time_limit: int = 600
    # SIGTERM: in-flight tasks get this long to finish, then they are
    # returned to the queue and the worker exits 0.  Keep it below the pod's
    # terminationGracePeriodSeconds.
    worker_shutdown_timeout: float = 20.0
    # A message delivered more often than this (worker killed each time) is
    # failed instead of run again: a poison message cannot loop forever.
    task_max_deliveries: int = 5
    queue_type: str = "classic"
    # STARTED state (GET /tasks/<id> shows a task is running) costs one more
    # Redis write per task: about a sixth of the drain rate of no-op tasks.
    task_track_started: bool = True
    result_expires: int = 86_400
    # Where the worker writes its probe files, gunicorn its heartbeat files
    # and prometheus-client its multiprocess files: the one writable path of
    # a read-only root filesystem (an emptyDir in Kubernetes).
    runtime_dir: str = "/tmp/workqueue"
    heartbeat_interval: float = 2.0
    port: int = 8000
    api_workers: int = 2
    api_threads: int = 4
    # How long the API waits for the broker (connect + publisher confirm)
    # and for the result backend before answering 503.
    api_dependency_timeout: float = 1.0
    worker_metrics_port: int = 9808

    @property
    def broker_is_amqp(self) -> bool:
        return urlsplit(self.broker_url).scheme in ("amqp", "amqps", "pyamqp")

    @property
    def local_data_dir(self) -> str:
        """Folder of the embedded filesystem broker (``filesystem:///path``)."""
        return urlsplit(self.broker_url).path or os.path.join(self.runtime_dir, "broker")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        read = _Reader(env)
        return cls(
            broker_url=_broker_url(read),
            result_backend=_result_backend(read),
            worker_debug_level=read.choice("WORKER_DEBUG_LEVEL", "info", LOG_LEVELS),
            worker_concurrency=read.integer("WORKER_CONCURRENCY", 2, minimum=1),
            worker_prefetch_multiplier=read.integer("WORKER_PREFETCH_MULTIPLIER", 1, minimum=1),
            worker_max_tasks_per_child=read.integer("WORKER_MAX_TASKS_PER_CHILD", 1000, minimum=1),
            worker_max_memory_per_child_kb=read.integer("WORKER_MAX_MEMORY_PER_CHILD_KB", 400_000, minimum=10_000),
            task_soft_time_limit=read.integer("TASK_SOFT_TIME_LIMIT", 540, minimum=1),
            task_time_limit=read.integer("TASK_TIME_LIMIT", 600, minimum=1),
            worker_shutdown_timeout=read.number("WORKER_SHUTDOWN_TIMEOUT", 20.0, minimum=0),
            task_max_deliveries=read.integer("TASK_MAX_DELIVERIES", 5, minimum=1),
            queue_type=read.choice("QUEUE_TYPE", "classic", QUEUE_TYPES),
            task_track_started=read.boolean("TASK_TRACK_STARTED", True),
            result_expires=read.integer("RESULT_EXPIRES", 86_400, minimum=60),
            runtime_dir=read.text("RUNTIME_DIR", "/tmp/workqueue"),
            heartbeat_interval=read.number("WORKER_HEARTBEAT_INTERVAL", 2.0, minimum=0.1),
            port=read.integer("PORT", 8000, minimum=1, maximum=65535),
            api_workers=read.integer("API_WORKERS", 2, minimum=1),
            api_threads=read.integer("API_THREADS", 4, minimum=1),
            api_dependency_timeout=read.number("API_DEPENDENCY_TIMEOUT", 1.0, minimum=0.05),
            worker_metrics_port=read.integer("WORKER_METRICS_PORT", 9808, minimum=0, maximum=65535),
        ).validated()

    def validated(self) -> Settings:
        if self.task_soft_time_limit >= self.task_time_limit:
            raise SettingsError(
                "TASK_SOFT_TIME_LIMIT must be below TASK_TIME_LIMIT "
                f"(got {self.task_soft_time_limit} >= {self.task_time_limit})"
            )
        _check_url("BROKER_URL", self.broker_url, BROKER_SCHEMES)
        _check_url("RESULT_BACKEND", self.result_backend, BACKEND_SCHEMES)
        return self


class _Reader:
    """Typed reads of environment variables with one-line errors."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.text(name, str(default)).lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise SettingsError(f"{name} must be true or false (got {value!r})")
        return value in ("true", "1", "yes")

    def _parsed(self, name: str, default: T, parse: Callable[[str], T], kind: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError:
            raise SettingsError(f"{name} must be {kind} (got {value!r})") from None

    def integer(self, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        value = self._parsed(name, default, int, "an integer")
        return _bounded(name, value, minimum, maximum)

    def number(self, name: str, default: float, minimum: float) -> float:
        value = self._parsed(name, default, float, "a number")
        return _bounded(name, value, minimum, None)


def _bounded(name: str, value: Any, minimum: Any, maximum: Any) -> Any:
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise SettingsError(f"{name} must be >= {minimum}{upper} (got {value})")
    return value


def _broker_url(read: _Reader) -> str:
    """``BROKER_URL`` wins; otherwise build it from the book's RABBITMQ_* names."""
    explicit = read.raw("BROKER_URL")
    if explicit:
        return explicit
    host = read.text("RABBITMQ_HOST", "message-queue")
    port = read.integer("RABBITMQ_PORT", 5672, minimum=1, maximum=65535)
    user = read.text("RABBITMQ_USERNAME", "guest")
    password = read.raw("RABBITMQ_PASSWORD") or ""
    vhost = read.text("RABBITMQ_VHOST", "/")
    # Credentials and vhost are percent-encoded: a generated password may
    # contain '@', '/' or ':' and the default vhost '/' must become '%2F'.
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return f"amqp://{auth}@{host}:{port}/{quote(vhost, safe='')}"


def _result_backend(read: _Reader) -> str:
    """``RESULT_BACKEND`` wins; otherwise build a Redis URL from REDIS_*."""
    explicit = read.raw("RESULT_BACKEND")
    if explicit:
        return explicit
    host = read.text("REDIS_HOST", "redis")
    port = read.integer("REDIS_PORT", 6379, minimum=1, maximum=65535)
    db = read.integer("REDIS_DB", 0, minimum=0, maximum=15)
    password = read.raw("REDIS_PASSWORD")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise SettingsError(f"{name} is not a valid URL ({exc})") from None
    if parts.scheme not in schemes:
        raise SettingsError(
            f"{name} must start with one of {', '.join(s + '://' for s in schemes)} (got {url.split(':', 1)[0]!r})"
        )


def from_env_or_exit() -> Settings:
    """Settings for a command-line entry point: one line on stderr and exit 2 when wrong."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> int:
    """Check the environment (``run.sh`` runs this before it execs anything)."""
    from_env_or_exit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
