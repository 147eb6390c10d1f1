"""``./dev.sh up``: run the API and one worker on this machine.

Backends, in order of preference:
1. whatever the environment configures (BROKER_URL or RABBITMQ_HOST,
   RESULT_BACKEND or REDIS_HOST);
2. RabbitMQ / Redis answering on localhost's standard ports;
3. an embedded default: kombu's filesystem transport and Celery's
   filesystem result store under ``.workqueue-data/`` (a try-out mode with
   no durability or delivery guarantees).
``--embedded`` skips 1 and 2.

It prints what it chose and the URLs, and writes them to
``.workqueue-data/session.env`` (``workqueue/local_session.py``), where the
command-line tools of the checkout find them; the file goes when it stops.
The API listens on 127.0.0.1 unless ``--host`` says otherwise.  Both
processes are started through ``run.sh`` exactly as in a container; Ctrl+C
stops both gracefully.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from workqueue import local_session
from workqueue.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = local_session.DATA_DIR
LOCAL_RABBITMQ = ("127.0.0.1", 5672)
LOCAL_REDIS = ("127.0.0.1", 6379)

Probe = Callable[[str, int], bool]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def choose_backends(
    env: Mapping[str, str],
    data_dir: Path,
    probe: Probe = reachable,
    rabbitmq: tuple[str, int] = LOCAL_RABBITMQ,
    redis: tuple[str, int] = LOCAL_REDIS,
) -> tuple[dict[str, str], list[str]]:
    """Environment additions for the services, and a line saying what was chosen."""
    chosen: dict[str, str] = {}
    notes: list[str] = []
    for label, names, server, local, local_url, embedded_url, embedded in (
        ("broker", ("BROKER_URL", "RABBITMQ_HOST"), "RabbitMQ", rabbitmq, f"amqp://guest:guest@{rabbitmq[0]}:{rabbitmq[1]}//",
         f"filesystem://{data_dir / 'broker'}", f"kombu filesystem transport in {data_dir / 'broker'}"),
        ("results", ("RESULT_BACKEND", "REDIS_HOST"), "Redis", redis, f"redis://{redis[0]}:{redis[1]}/0",
         f"file://{data_dir / 'results'}", f"files in {data_dir / 'results'}"),
    ):  # fmt: skip
        if any(env.get(name) for name in names):
            notes.append(f"{label}: as configured")
        elif probe(*local):
            chosen[names[0]] = local_url
            notes.append(f"{label}: {server} on {local[0]}:{local[1]}")
        else:
            chosen[names[0]] = embedded_url
            notes.append(f"{label}: embedded ({embedded})")
    return chosen, notes


def choose_access(env: dict[str, str]) -> str:
    """Who may use the local API, said in the first line: without a token it is open, deliberately.

    The services refuse to start an API with auth on and no token (the
    default everywhere else); on a laptop with no token given, this sets
    ``API_AUTH=off`` explicitly instead.
    """
    if env.get("API_TOKENS", "").strip(", ") or env.get("API_READ_TOKENS", "").strip(", "):
        return "bearer token required (API_TOKENS)"
    if not env.get("API_AUTH", "").strip():
        env["API_AUTH"] = "off"
    if env["API_AUTH"].strip().lower() == "off":
        return "open to anyone (API_AUTH=off; set API_TOKENS to require a token)"
    return f"API_AUTH={env['API_AUTH']} with no token: the API will refuse to start (set API_TOKENS)"


def shown(url: str) -> str:
    """A URL to print: its password replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def session_values(settings: Settings, api_url: str) -> dict[str, str]:
    """What the tools of this checkout need to reach this session (``workqueue/local_session.py``)."""
    return {
        local_session.API_URL: api_url,
        "BROKER_URL": settings.broker_url,
        "RESULT_BACKEND": settings.result_backend,
        "TASK_MODULES": ",".join(settings.task_modules),
        "TASK_ROUTES": ",".join(settings.task_routes),
        "API_TOKENS": ",".join(settings.api_tokens),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./dev.sh up",
        description="Run the workqueue API and a worker locally; Ctrl+C stops both.",
    )
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="use the embedded broker and result store (files under --data-dir) even when RabbitMQ and "
        "Redis are configured or running locally: a try-out mode without delivery guarantees",
    )
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="embedded stores, runtime files, session")
    parser.add_argument("--host", default="127.0.0.1", help="address the API listens on (127.0.0.1: this machine only)")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    env = dict(os.environ)
    if args.embedded:
        for name in list(env):
            if name.startswith(local_session.CONNECTION_PREFIXES):
                env.pop(name)
        chosen, notes = choose_backends(env, data_dir, probe=lambda host, port: False)
    else:
        chosen, notes = choose_backends(env, data_dir)
    env.update(chosen)
    env.setdefault("RUNTIME_DIR", str(data_dir / "runtime"))
    env.setdefault("PYTHON", sys.executable)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port = env.setdefault("PORT", "8000")
    access = choose_access(env)
    if args.host not in ("127.0.0.1", "localhost", "::1") and env.get("API_AUTH", "").strip().lower() == "off":
        access = access.replace("open to anyone", f"open to anyone who reaches {args.host}:{port}", 1)
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"workqueue: configuration error: {exc}", file=sys.stderr)
        return 2
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    api_url = f"http://{shown_host}:{port}"
    print(f"workqueue: {'; '.join(notes)}; API on {api_url}, {access}; dashboard on {api_url}/dashboard/", flush=True)
    session = data_dir / local_session.PATH.name
    local_session.write(session_values(settings, api_url), session)
    if session == local_session.PATH:
        found = "submit_tasks.py, run.sh submit and python -m loadtest.run use these when your shell sets none"
    else:
        found = f"the tools look in {local_session.PATH}, not here: export BROKER_URL and RESULT_BACKEND for them"
    lines = [
        ("API", f"{api_url}  (listening on {args.host}:{port}; the contract: {api_url}/openapi.json)"),
        ("dashboard", f"{api_url}/dashboard/"),
        ("BROKER_URL", shown(settings.broker_url)),
        ("RESULT_BACKEND", shown(settings.result_backend)),
        ("session", f"{session} ({found})"),
    ]
    if not settings.result_backend.startswith(("redis://", "rediss://")):
        lines.append(("embedded", "no delivery guarantees; listing, ?wait=, events and retry answer 501 (need Redis)"))
    for name, value in lines:
        print(f"  {name:<15} {value}", flush=True)

    run_sh = str(REPO / "run.sh")
    try:
        children = [
            subprocess.Popen([run_sh, "worker"], env=env, cwd=REPO),
            subprocess.Popen([run_sh, "api", "--bind", f"{args.host}:{port}"], env=env, cwd=REPO),
        ]
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        codes = [child.wait() for child in children]
    finally:
        local_session.remove(session)
    return 0 if stopping else max(code or 1 for code in codes)


if __name__ == "__main__":
    raise SystemExit(main())
