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

from workqueue.client import DependencyUnavailable, TaskClient
from workqueue.settings import from_env_or_exit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds (default 300)")
    parser.add_argument("--api", metavar="URL", help="wait for URL/readyz to answer 200 instead of the servers")
    args = parser.parse_args(argv)
    if args.api:
        return wait_for_api(args.api.rstrip("/"), args.timeout)
    client = TaskClient(from_env_or_exit())
    deadline = time.monotonic() + args.timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            client.check_broker()
            client.check_result_store()
            print("broker and result backend are reachable", flush=True)
            return 0
        except DependencyUnavailable as exc:
            message = f"waiting for dependencies: {exc}"
            if message != last:
                print(message, flush=True)
                last = message
            time.sleep(1)
    print(f"gave up after {args.timeout:.0f} s: {last}", file=sys.stderr)
    return 1


def wait_for_api(url: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=3) as answer:
                print(f"{url}/readyz answered {answer.status}", flush=True)
                return 0
        except OSError as exc:  # refused, not resolvable yet, or 503 (HTTPError)
            message = f"waiting for the API: {exc}"
            if message != last:
                print(message, flush=True)
                last = message
        time.sleep(2)
    print(f"gave up after {timeout:.0f} s: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
