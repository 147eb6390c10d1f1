"""Wait until the broker and the result store answer, or the API (an init container step).

``run.sh wait`` runs this before the worker starts in Kubernetes, so a pod
shows ``Init`` while RabbitMQ boots instead of crash-looping.  It checks a
real AMQP handshake and a Redis round trip, not just DNS or an open port.
``run.sh wait --api URL`` waits for the API's ``/readyz`` instead (the HTTP
load test starts its load once the API is ready).
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from collections.abc import Callable

from workqueue.client import DependencyUnavailable, TaskClient
from workqueue.settings import from_env_or_exit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds (default 300)")
    parser.add_argument("--api", metavar="URL", help="wait for URL/readyz to answer 200 instead of the servers")
    args = parser.parse_args(argv)
    if args.api:
        url = args.api.rstrip("/")
        return until_ready(lambda: api_answers(url), "waiting for the API", (OSError,), args.timeout, 2.0)
    client = TaskClient(from_env_or_exit())
    errors = (DependencyUnavailable,)
    return until_ready(lambda: servers_answer(client), "waiting for dependencies", errors, args.timeout)


def servers_answer(client: TaskClient) -> str:
    client.check_broker()
    client.check_result_store()
    return "broker and result backend are reachable"


def api_answers(url: str) -> str:
    with urllib.request.urlopen(f"{url}/readyz", timeout=3) as answer:  # a 503 raises HTTPError, an OSError
        return f"{url}/readyz answered {answer.status}"


def until_ready(
    check: Callable[[], str],
    waiting: str,
    errors: tuple[type[BaseException], ...],
    timeout: float,
    interval: float = 1.0,
) -> int:
    """Run ``check`` until it returns (0) or ``timeout`` passes (1); each new reason to wait is said once."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            print(check(), flush=True)
            return 0
        except errors as exc:
            message = f"{waiting}: {exc}"
            if message != last:
                print(message, flush=True)
                last = message
        time.sleep(interval)
    print(f"gave up after {timeout:.0f} s: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
