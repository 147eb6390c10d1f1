"""``./dev.sh up``: run the API and one worker on this machine.

Backends, in order of preference:
1. whatever the environment configures (BROKER_URL or RABBITMQ_HOST,
   RESULT_BACKEND or REDIS_HOST);
2. RabbitMQ / Redis answering on localhost's standard ports;
3. an embedded default: kombu's filesystem transport and Celery's
   filesystem result store under ``.workqueue-data/`` (a try-out mode with
   no durability or delivery guarantees).

Both processes are started through ``run.sh`` exactly as in a container;
Ctrl+C stops both gracefully.
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

REPO = Path(__file__).resolve().parents[1]
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
    if env.get("BROKER_URL") or env.get("RABBITMQ_HOST"):
        notes.append("broker: as configured")
    elif probe(*rabbitmq):
        chosen["BROKER_URL"] = f"amqp://guest:guest@{rabbitmq[0]}:{rabbitmq[1]}//"
        notes.append(f"broker: RabbitMQ on {rabbitmq[0]}:{rabbitmq[1]}")
    else:
        chosen["BROKER_URL"] = f"filesystem://{data_dir / 'broker'}"
        notes.append(f"broker: embedded (kombu filesystem transport in {data_dir / 'broker'})")
    if env.get("RESULT_BACKEND") or env.get("REDIS_HOST"):
        notes.append("results: as configured")
    elif probe(*redis):
        chosen["RESULT_BACKEND"] = f"redis://{redis[0]}:{redis[1]}/0"
        notes.append(f"results: Redis on {redis[0]}:{redis[1]}")
    else:
        chosen["RESULT_BACKEND"] = f"file://{data_dir / 'results'}"
        notes.append(f"results: embedded (files in {data_dir / 'results'})")
    return chosen, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the workqueue API and a worker locally.")
    parser.add_argument("--data-dir", default=str(REPO / ".workqueue-data"), help="embedded broker/results/runtime")
    parser.add_argument("--embedded", action="store_true", help="use the embedded broker and result store")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    env = dict(os.environ)
    if args.embedded:
        for name in ("BROKER_URL", "RABBITMQ_HOST", "RESULT_BACKEND", "REDIS_HOST"):
            env.pop(name, None)
        chosen, notes = choose_backends(env, data_dir, probe=lambda host, port: False)
    else:
        chosen, notes = choose_backends(env, data_dir)
    env.update(chosen)
    env.setdefault("RUNTIME_DIR", str(data_dir / "runtime"))
    env.setdefault("PYTHON", sys.executable)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port = env.setdefault("PORT", "8000")
    print(f"workqueue: {'; '.join(notes)}; API on http://127.0.0.1:{port}", flush=True)

    run_sh = str(REPO / "run.sh")
    children = [
        subprocess.Popen([run_sh, "worker"], env=env, cwd=REPO),
        subprocess.Popen([run_sh, "api"], env=env, cwd=REPO),
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
    return 0 if stopping else max(code or 1 for code in codes)


if __name__ == "__main__":
    raise SystemExit(main())
