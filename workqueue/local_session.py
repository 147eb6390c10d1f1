"""The settings of a running ``./dev.sh up``, for the command-line tools of the same checkout.

``./dev.sh up`` chooses where RabbitMQ and Redis are (configured, found on
localhost, or embedded) and writes what it chose to
``.workqueue-data/session.env`` (``NAME=value`` lines, shell-quoted; only
its owner may read it, since URLs may hold passwords).  ``submit_tasks.py``,
``run.sh submit`` and ``python -m loadtest.run`` read it when the shell
configures no connection of its own (none of ``BROKER_URL``,
``RESULT_BACKEND``, ``RABBITMQ_*``, ``REDIS_*``), so they reach the services
``./dev.sh up`` is using without anything exported.  The file names the
pid of its ``./dev.sh up``: a file left by one that died is ignored, and a
clean stop removes it.

Nothing here reads the process environment (``workqueue/settings.py`` does,
and passes it in); the services themselves never read the file.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from workqueue.processes import process_alive

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / ".workqueue-data"
PATH = DATA_DIR / "session.env"
PID = "WORKQUEUE_SESSION_PID"
API_URL = "WORKQUEUE_API_URL"
# A shell that sets any of these has chosen its servers: the session is not used.
CONNECTION_PREFIXES = ("BROKER_URL", "RESULT_BACKEND", "RABBITMQ_", "REDIS_")
# What the session hands on: where the servers are, and what the API and the
# workers must agree on with a client (its catalogue, its token).
SHARED = ("BROKER_URL", "RESULT_BACKEND", "TASK_MODULES", "TASK_ROUTES", "API_TOKENS")


def write(values: Mapping[str, str], path: Path = PATH, pid: int | None = None) -> Path:
    """Write the session file (mode 0600) of the ``./dev.sh up`` with ``pid``; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by ./dev.sh up for the tools of this checkout (submit_tasks.py, run.sh submit,",
        "# python -m loadtest.run); removed when it stops. Shell syntax: `set -a; . this-file` works too.",
        f"{PID}={pid if pid is not None else os.getpid()}",
        *(f"{name}={shlex.quote(value)}" for name, value in values.items() if value),
    ]
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(temporary, path)  # never half a file for a reader
    return path


def remove(path: Path = PATH, pid: int | None = None) -> None:
    """Remove the session file if it is still the one of ``pid`` (a newer session keeps its own)."""
    found = read(path, require_alive=False)
    if found is not None and found.get(PID) == str(pid if pid is not None else os.getpid()):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read(path: Path = PATH, require_alive: bool = True) -> dict[str, str] | None:
    """The session's values, or None: no file, or (``require_alive``) its ``./dev.sh up`` is gone."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, raw = line.partition("=")
        if sep and name.strip() and not name.startswith("#"):
            words = shlex.split(raw)
            values[name.strip()] = words[0] if words else ""
    if require_alive and not _alive(values.get(PID, "")):
        return None
    return values


def configures_connection(environ: Mapping[str, str]) -> bool:
    """Whether the environment says where the servers are (then the session is not used)."""
    return any(name.startswith(CONNECTION_PREFIXES) and value.strip() for name, value in environ.items())


def applied(environ: Mapping[str, str], path: Path = PATH) -> dict[str, str]:
    """``environ``, plus the session's shared settings when ``environ`` configures no connection.

    A setting the environment gives itself (``TASK_MODULES``, a token) is kept.
    """
    merged = dict(environ)
    session = None if configures_connection(environ) else read(path)
    if session:
        open_api = merged.get("API_AUTH", "").strip().lower() == "off"  # a token would contradict it
        for name in SHARED:
            if name == "API_TOKENS" and open_api:
                continue
            if session.get(name) and not merged.get(name, "").strip():
                merged[name] = session[name]
        if session.get(API_URL):
            merged.setdefault(API_URL, session[API_URL])
    return merged


def source(environ: Mapping[str, str], path: Path = PATH) -> str:
    """Where a tool's servers came from, for a message that says it cannot reach them."""
    if configures_connection(environ):
        return "the environment (BROKER_URL, RESULT_BACKEND, RABBITMQ_*, REDIS_*)"
    if read(path):
        return f"the running ./dev.sh up ({path})"
    return (
        "the defaults, the Service names of a Kubernetes install: nothing is configured and no ./dev.sh up "
        "runs in this checkout (start one, or set BROKER_URL and RESULT_BACKEND)"
    )


def _alive(pid: str) -> bool:
    return pid.isdigit() and process_alive(int(pid))
