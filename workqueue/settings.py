"""One typed settings object, read once from the environment.

Every environment variable the project reads is declared here once, with
its default, next to the field it fills (``_env(NAME, default, ...)``).
The API, the worker and the command-line tools build everything from a
``Settings`` instance; tests build one directly.  A missing or malformed
value raises ``SettingsError`` whose message is one line naming the
variable, so a pod that is misconfigured says why in the first line of its
log.

``python -m workqueue.settings`` checks the environment without starting
anything; with ``--shell`` it also prints the resolved values as shell
assignments, which is how ``run.sh`` gets them (so the shell never writes a
default of its own).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from workqueue import local_session, tls

T = TypeVar("T")

QUEUE_TYPES = ("classic", "quorum")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
API_WORKER_CLASSES = ("gevent", "gthread")
API_AUTH_MODES = ("required", "off")
# Bearer tokens (API_TOKENS, API_READ_TOKENS): RFC 6750's token syntax, so
# any HTTP client can send one, and long enough that guessing is hopeless
# (`openssl rand -hex 24` gives 48 characters; the chart generates 40).
MIN_TOKEN_LENGTH = 16
TOKEN_SYNTAX = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "filesystem")
BACKEND_SCHEMES = ("redis", "rediss", "sentinel", "file")

# The parts BROKER_URL and RESULT_BACKEND are built from when they are not
# given whole (the book's names; the hosts are the Kubernetes Service names).
BROKER_PARTS: dict[str, Any] = {
    "RABBITMQ_TLS": False,
    "RABBITMQ_HOST": "message-queue",
    "RABBITMQ_PORT": 5672,
    "RABBITMQ_USERNAME": "guest",
    "RABBITMQ_VHOST": "/",
}
BACKEND_PARTS: dict[str, Any] = {"REDIS_TLS": False, "REDIS_HOST": "redis", "REDIS_PORT": 6379, "REDIS_DB": 0}


# Redis connections an API process keeps for commands, beside its waits' pub/sub ones.
REDIS_COMMAND_CONNECTIONS = 16


class SettingsError(ValueError):
    """A configuration value is missing or malformed (message names the variable)."""


def _env(name: str, default: Any, **rules: Any) -> Any:
    """A field read from environment variable ``name``; its type is the default's."""
    return dataclasses.field(default=default, metadata={"env": name, **rules})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the API, the worker and the tools read from the environment."""

    broker_url: str  # BROKER_URL, or built from RABBITMQ_* (BROKER_PARTS)
    result_backend: str  # RESULT_BACKEND, or built from REDIS_* (BACKEND_PARTS)
    worker_debug_level: str = _env("WORKER_DEBUG_LEVEL", "info", choices=LOG_LEVELS)
    # Celery's two INFO lines per task ("received", "succeeded") cost a
    # quarter of a short task's CPU (bench/README.md); failures, retries and
    # everything else are logged either way, and counts are in the metrics.
    worker_log_tasks: bool = _env("WORKER_LOG_TASKS", False)
    # Worker process model.  Prefetch 1 keeps long tasks from queueing up
    # behind a busy process while other workers sit idle.
    worker_concurrency: int = _env("WORKER_CONCURRENCY", 2, minimum=1)
    worker_prefetch_multiplier: int = _env("WORKER_PREFETCH_MULTIPLIER", 1, minimum=1)
    # Replacing a pool process costs ~0.3 s of CPU (a fork whose pages are
    # copied as Python touches them, new connections): every 1,000 tasks that
    # was a fifth of a short task's cost.  The memory cap is the real guard.
    worker_max_tasks_per_child: int = _env("WORKER_MAX_TASKS_PER_CHILD", 10_000, minimum=1)
    worker_max_memory_per_child_kb: int = _env("WORKER_MAX_MEMORY_PER_CHILD_KB", 400_000, minimum=10_000)
    # Time limits must stay below RabbitMQ's consumer_timeout (30 min by
    # default): an unacked delivery older than that is cancelled by the
    # broker (celery/celery#6760).
    task_soft_time_limit: int = _env("TASK_SOFT_TIME_LIMIT", 540, minimum=1)
    task_time_limit: int = _env("TASK_TIME_LIMIT", 600, minimum=1)
    # SIGTERM: in-flight tasks get this long to finish, then they are
    # returned to the queue and the worker exits 0.  Keep it below the pod's
    # terminationGracePeriodSeconds.
    worker_shutdown_timeout: float = _env("WORKER_SHUTDOWN_TIMEOUT", 20.0, minimum=0)
    # A message delivered more often than this (worker killed each time) is
    # failed instead of run again: a poison message cannot loop forever.
    task_max_deliveries: int = _env("TASK_MAX_DELIVERIES", 5, minimum=1)
    queue_type: str = _env("QUEUE_TYPE", "classic", choices=QUEUE_TYPES)
    # STARTED state (GET /tasks/<id> shows a task is running) costs one more
    # Redis write per task: about a sixth of the drain rate of no-op tasks.
    task_track_started: bool = _env("TASK_TRACK_STARTED", True)
    # ...so it is stored only for a task still running after this many
    # seconds (0: before every task, as Celery does): nobody watches a task
    # that ends sooner, and a no-op task drains faster (workqueue/started_state.py).
    task_started_delay: float = _env("TASK_STARTED_DELAY", 0.1, minimum=0, maximum=10)
    # Task events are what Flower reads; nothing else here needs them.
    worker_send_events: bool = _env("WORKER_SEND_EVENTS", False)
    result_expires: int = _env("RESULT_EXPIRES", 86_400, minimum=60)
    # Queues this worker consumes (comma-separated); one pool of workers per set.
    worker_queues: tuple[str, ...] = _env("WORKER_QUEUES", ("celery",))
    # Route tasks to other queues than their definitions say: "pi=slow,sleep=slow".
    # The API and every worker must agree: set it in the shared ConfigMap.
    task_routes: tuple[str, ...] = _env("TASK_ROUTES", ())
    # Modules whose @task definitions are submittable besides workqueue.tasks
    # (comma-separated import paths): keep your own tasks apart from ours.
    task_modules: tuple[str, ...] = _env("TASK_MODULES", ())
    # Where the worker writes its probe files, gunicorn its heartbeat files
    # and prometheus-client its multiprocess files: the one writable path of
    # a read-only root filesystem (an emptyDir in Kubernetes).
    runtime_dir: str = _env("RUNTIME_DIR", "/tmp/workqueue")
    heartbeat_interval: float = _env("WORKER_HEARTBEAT_INTERVAL", 2.0, minimum=0.1)
    # Read by celery_status.sh (bash, no Python at probe time); declared here
    # so its default is written once and checked against the script.
    heartbeat_max_age: int = _env("WORKER_HEARTBEAT_MAX_AGE", 30, minimum=1)
    port: int = _env("PORT", 8000, minimum=1, maximum=65535)
    api_workers: int = _env("API_WORKERS", 2, minimum=1)
    # Serving model of run.sh api (api/gunicorn_conf.py).  gevent: a greenlet
    # per connection, so clients that send slowly cannot hold the server;
    # gthread (the earlier model): API_THREADS threads per worker, each busy
    # for as long as its client takes to send a request.
    api_worker_class: str = _env("API_WORKER_CLASS", "gevent", choices=API_WORKER_CLASSES)
    api_worker_connections: int = _env("API_WORKER_CONNECTIONS", 1000, minimum=1)
    api_threads: int = _env("API_THREADS", 4, minimum=1)
    # gevent: a client must send a request's headers within this many seconds,
    # then its body within as many again, or it is disconnected (a body too
    # slow gets a 408 first).  Also how long an idle keep-alive connection stays.
    api_read_timeout: int = _env("API_READ_TIMEOUT", 5, minimum=1)
    # gunicorn's access log target ("-" for stdout); empty: no access log.
    api_access_log: str = _env("API_ACCESS_LOG", "")
    # Who may use /tasks* (api/auth.py, SECURITY.md).  "required": a bearer
    # token of API_TOKENS or API_READ_TOKENS, and the API refuses to start
    # without one, so a Secret with an empty key never opens it by accident.
    # "off": open to anyone who reaches it, a choice made explicitly
    # (./dev.sh up on a laptop does, and says so).
    api_auth: str = _env("API_AUTH", "required", choices=API_AUTH_MODES)
    # Tokens that may do anything under /tasks* (comma-separated; from a
    # Secret; blank entries are ignored).  Several allow rotation.
    api_tokens: tuple[str, ...] = _env("API_TOKENS", (), secret=True)
    # Tokens that may only read (GET /tasks*): dashboards, monitoring.
    api_read_tokens: tuple[str, ...] = _env("API_READ_TOKENS", (), secret=True)
    # How long the API waits for the broker (connect + publisher confirm)
    # and for the result backend before answering 503.
    api_dependency_timeout: float = _env("API_DEPENDENCY_TIMEOUT", 1.0, minimum=0.05)
    # Bounds of one API process (SECURITY.md, "What one request may cost"):
    # connections to RabbitMQ for publishing (more concurrent submissions wait
    # for one, then get 503), and waits (?wait=, event streams) held open at
    # once (more get 503), each holding a Redis pub/sub connection.  Redis
    # connections per process: at most API_MAX_WAITS + REDIS_COMMAND_CONNECTIONS.
    api_broker_connections: int = _env("API_BROKER_CONNECTIONS", 16, minimum=1)
    api_max_waits: int = _env("API_MAX_WAITS", 64, minimum=1)
    worker_metrics_port: int = _env("WORKER_METRICS_PORT", 9808, minimum=0, maximum=65535)
    # Each worker refreshes its heartbeat key in Redis this often (the
    # dashboard's live workers); the key expires after 3 times this, so a
    # worker that died disappears from the list within 15 s by default.
    worker_presence_interval: float = _env("WORKER_PRESENCE_INTERVAL", 5.0, minimum=0.1)
    # How long a dashboard sign-in lasts (the session cookie's expiry, checked
    # by the server too); then the browser asks for the token again.
    dashboard_session_seconds: int = _env("DASHBOARD_SESSION_SECONDS", 28_800, minimum=60)
    # OpenTelemetry traces (the `otel` extra): set, the API and the workers
    # export spans there over OTLP/HTTP, one trace from the HTTP request
    # through the publish into the task; empty, OpenTelemetry is not imported.
    # The SDK reads the other OTEL_* variables (OTEL_SERVICE_NAME, sampling) itself.
    otel_exporter_otlp_endpoint: str = _env("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    # TLS ("External RabbitMQ and Redis" in charts/workqueue/README.md).  An amqps:// BROKER_URL (RABBITMQ_TLS=true
    # builds one) or a rediss:// RESULT_BACKEND (REDIS_TLS=true) speaks TLS;
    # these name the CA bundle that verifies the server (empty: the system's)
    # and the client certificate and key, if the server asks for one: files
    # mounted from a Secret.  The server's hostname is verified unless turned off.
    rabbitmq_tls_ca_file: str = _env("RABBITMQ_TLS_CA_FILE", "")
    rabbitmq_tls_cert_file: str = _env("RABBITMQ_TLS_CERT_FILE", "")
    rabbitmq_tls_key_file: str = _env("RABBITMQ_TLS_KEY_FILE", "")
    rabbitmq_tls_verify_hostname: bool = _env("RABBITMQ_TLS_VERIFY_HOSTNAME", True)
    redis_tls_ca_file: str = _env("REDIS_TLS_CA_FILE", "")
    redis_tls_cert_file: str = _env("REDIS_TLS_CERT_FILE", "")
    redis_tls_key_file: str = _env("REDIS_TLS_KEY_FILE", "")
    redis_tls_verify_hostname: bool = _env("REDIS_TLS_VERIFY_HOSTNAME", True)
    # Redis Sentinel: with REDIS_SENTINELS (host:port, comma-separated) the
    # result store is the master these sentinels name, followed across
    # failovers by everything that talks to Redis.
    redis_sentinel_master: str = _env("REDIS_SENTINEL_MASTER", "mymaster")

    @property
    def publishing_timeout(self) -> float:
        """Seconds after which an idempotency claim still "publishing" means its request died.

        Longer than any publish can take (a connect and a confirm, each
        bounded by API_DEPENDENCY_TIMEOUT, and the record's writes), with room
        for a loaded process.
        """
        return max(10.0, 10 * self.api_dependency_timeout)

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """Every broker URL: BROKER_URL may list several (``;``), kombu's failover order."""
        return tuple(url.strip() for url in self.broker_url.split(";") if url.strip())

    @property
    def broker_tls(self) -> bool:
        return any(urlsplit(url).scheme == "amqps" for url in self.broker_urls)

    @property
    def result_backend_tls(self) -> bool:
        return urlsplit(self.result_backend).scheme == "rediss"

    @property
    def result_backend_sentinel(self) -> bool:
        return urlsplit(self.result_backend).scheme == "sentinel"

    @property
    def broker_is_amqp(self) -> bool:
        return urlsplit(self.broker_url).scheme in ("amqp", "amqps", "pyamqp")

    @property
    def local_data_dir(self) -> str:
        """Folder of the embedded filesystem broker (``filesystem:///path``)."""
        return urlsplit(self.broker_url).path or os.path.join(self.runtime_dir, "broker")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        read = _Reader(os.environ if environ is None else environ)
        values = {field.name: read.field(field) for field in dataclasses.fields(cls) if "env" in field.metadata}
        return cls(broker_url=_broker_url(read), result_backend=_result_backend(read), **values).validated()

    def validated(self) -> Settings:
        if self.task_soft_time_limit >= self.task_time_limit:
            raise SettingsError(
                "TASK_SOFT_TIME_LIMIT must be below TASK_TIME_LIMIT "
                f"(got {self.task_soft_time_limit} >= {self.task_time_limit})"
            )
        for url in self.broker_urls or (self.broker_url,):
            _check_url("BROKER_URL", url, BROKER_SCHEMES)
        for url in self.result_backend.split(";"):
            _check_url("RESULT_BACKEND", url, BACKEND_SCHEMES)
        for name, path in (
            ("RABBITMQ_TLS_CA_FILE", self.rabbitmq_tls_ca_file),
            ("RABBITMQ_TLS_CERT_FILE", self.rabbitmq_tls_cert_file),
            ("RABBITMQ_TLS_KEY_FILE", self.rabbitmq_tls_key_file),
            ("REDIS_TLS_CA_FILE", self.redis_tls_ca_file),
            ("REDIS_TLS_CERT_FILE", self.redis_tls_cert_file),
            ("REDIS_TLS_KEY_FILE", self.redis_tls_key_file),
        ):
            if path and not os.path.isfile(path):
                raise SettingsError(f"{name} names {path!r}, which is not a readable file (a mounted Secret?)")
        for service, cert, key in (
            ("RABBITMQ", self.rabbitmq_tls_cert_file, self.rabbitmq_tls_key_file),
            ("REDIS", self.redis_tls_cert_file, self.redis_tls_key_file),
        ):
            if bool(cert) != bool(key):
                raise SettingsError(f"{service}_TLS_CERT_FILE and {service}_TLS_KEY_FILE go together: both or neither")
        _check_tokens("API_TOKENS", self.api_tokens)
        _check_tokens("API_READ_TOKENS", self.api_read_tokens)
        if set(self.api_tokens) & set(self.api_read_tokens):
            raise SettingsError("a token is in both API_TOKENS and API_READ_TOKENS: give each token one scope")
        if self.api_auth == "off" and (self.api_tokens or self.api_read_tokens):
            # Tokens that would silently not be checked: say which setting wins.
            raise SettingsError("API_AUTH is off but API_TOKENS or API_READ_TOKENS is set: remove one of them")
        return self

    def check_api_access(self) -> Settings:
        """What the API needs to start: with ``API_AUTH=required`` (the default), at least one token."""
        if self.api_auth == "required" and not (self.api_tokens or self.api_read_tokens):
            raise SettingsError(
                "API_AUTH is required but API_TOKENS and API_READ_TOKENS hold no token: "
                "give the API a token (from a Secret), or set API_AUTH=off for an open API"
            )
        return self

    def shell_assignments(self) -> str:
        """``NAME=value`` lines of every plainly named setting (no URLs, no secrets)."""
        lines = []
        for field in dataclasses.fields(self):
            if "env" in field.metadata and not field.metadata.get("secret"):
                lines.append(f"{field.metadata['env']}={shlex.quote(_shell_text(getattr(self, field.name)))}")
        return "\n".join(lines) + "\n"


def defaults() -> dict[str, Any]:
    """Every variable's default, by environment name (what scripts must agree with)."""
    found = {field.metadata["env"]: field.default for field in dataclasses.fields(Settings) if "env" in field.metadata}
    return {**found, **BROKER_PARTS, **BACKEND_PARTS}


def _shell_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


class _Reader:
    """Typed reads of environment variables with one-line errors."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def field(self, field: dataclasses.Field) -> Any:
        """The value of a declared field; how to parse it follows from its default."""
        rules = dict(field.metadata)
        name, default = rules.pop("env"), field.default
        rules.pop("secret", None)
        if "choices" in rules:
            return self.choice(name, default, rules["choices"])
        if isinstance(default, bool):
            return self.boolean(name, default)
        if isinstance(default, int):
            return _bounded(name, self._parsed(name, default, int, "an integer"), **rules)
        if isinstance(default, float):
            return _bounded(name, self._parsed(name, default, float, "a number"), **rules)
        if isinstance(default, tuple):
            parts = tuple(part.strip() for part in self.text(name, "").split(",") if part.strip())
            return parts or default
        return self.text(name, default)

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

    def port(self, name: str, default: int) -> int:
        return _bounded(name, self._parsed(name, default, int, "an integer"), minimum=1, maximum=65535)


def _bounded(name: str, value: Any, minimum: Any = None, maximum: Any = None) -> Any:
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise SettingsError(f"{name} must be >= {minimum}{upper} (got {value})")
    return value


def _broker_url(read: _Reader) -> str:
    """``BROKER_URL`` wins; otherwise build it from the book's RABBITMQ_* names.

    ``RABBITMQ_HOST`` may name several nodes (comma-separated): the URL then
    lists each (``;``), which kombu fails over between.
    """
    explicit = read.raw("BROKER_URL")
    if explicit:
        return explicit
    hosts = [h.strip() for h in read.text("RABBITMQ_HOST", BROKER_PARTS["RABBITMQ_HOST"]).split(",") if h.strip()]
    port = read.port("RABBITMQ_PORT", BROKER_PARTS["RABBITMQ_PORT"])
    user = read.text("RABBITMQ_USERNAME", BROKER_PARTS["RABBITMQ_USERNAME"])
    password = read.raw("RABBITMQ_PASSWORD") or ""
    vhost = read.text("RABBITMQ_VHOST", BROKER_PARTS["RABBITMQ_VHOST"])
    scheme = "amqps" if read.boolean("RABBITMQ_TLS", BROKER_PARTS["RABBITMQ_TLS"]) else "amqp"
    # Credentials and vhost are percent-encoded: a generated password may
    # contain '@', '/' or ':' and the default vhost '/' must become '%2F'.
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return ";".join(f"{scheme}://{auth}@{_host_port(host, port)}/{quote(vhost, safe='')}" for host in hosts)


def _host_port(host: str, default_port: int) -> str:
    """``host`` or ``host:port`` as given; the default port when none is."""
    return host if ":" in host and not host.startswith("[") else f"{host}:{default_port}"


def _result_backend(read: _Reader) -> str:
    """``RESULT_BACKEND`` wins; otherwise build a Redis URL from REDIS_*."""
    explicit = read.raw("RESULT_BACKEND")
    if explicit:
        return explicit
    host = read.text("REDIS_HOST", BACKEND_PARTS["REDIS_HOST"])
    port = read.port("REDIS_PORT", BACKEND_PARTS["REDIS_PORT"])
    db = _bounded("REDIS_DB", read._parsed("REDIS_DB", BACKEND_PARTS["REDIS_DB"], int, "an integer"), 0, 15)
    password = read.raw("REDIS_PASSWORD")
    auth = f":{quote(password, safe='')}@" if password else ""
    sentinels = [s.strip() for s in (read.raw("REDIS_SENTINELS") or "").split(",") if s.strip()]
    if sentinels:
        # Celery's form: one sentinel:// URL per sentinel; the master's name
        # goes in the transport options (REDIS_SENTINEL_MASTER).
        return ";".join(f"sentinel://{auth}{_host_port(s, 26379)}/{db}" for s in sentinels)
    scheme = "rediss" if read.boolean("REDIS_TLS", BACKEND_PARTS["REDIS_TLS"]) else "redis"
    return f"{scheme}://{auth}{host}:{port}/{db}"


def _check_tokens(name: str, tokens: tuple[str, ...]) -> None:
    """Each token well formed; the message says which one, never what it is."""
    for number, token in enumerate(tokens, 1):
        where = f"{name}: token {number} of {len(tokens)}"
        if len(token) < MIN_TOKEN_LENGTH:
            raise SettingsError(
                f"{where} has {len(token)} characters, fewer than {MIN_TOKEN_LENGTH} "
                "(make one with: openssl rand -hex 24)"
            )
        if not TOKEN_SYNTAX.fullmatch(token):
            raise SettingsError(f"{where} has a character other than letters, digits and -._~+/ (or = at its end)")


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


def from_env_or_exit(local_session: bool = False) -> Settings:
    """Settings for a command-line entry point: one line on stderr and exit 2 when wrong.

    ``local_session``: a tool of the checkout (not a service) also takes the
    servers of a running ``./dev.sh up`` when the environment names none
    (``workqueue/local_session.py``).
    """
    try:
        return Settings.from_env(tool_environment() if local_session else None)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def tool_environment() -> dict[str, str]:
    """The environment of a command-line tool: the process's, and a running ``./dev.sh up``'s servers."""
    return local_session.applied(os.environ)


def tool_settings_source() -> str:
    """Where a command-line tool's servers came from (``tool_environment``), said when it cannot reach them."""
    return local_session.source(os.environ)


def main(argv: list[str] | None = None) -> int:
    """Check the environment; ``--api``: also what the API needs; ``--shell``: print the values for ``eval``."""
    args = sys.argv[1:] if argv is None else argv
    if not set(args) <= {"--shell", "--api"}:
        print("usage: python -m workqueue.settings [--shell] [--api]", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
        if "--api" in args:
            settings.check_api_access()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    problem = tls.check(settings)
    if problem:
        print(f"configuration error: {problem}", file=sys.stderr)
        return 2
    if "--shell" in args:
        sys.stdout.write(settings.shell_assignments())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
