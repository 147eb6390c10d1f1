"""How often a process forked while another thread does TLS hangs, without and with the worker's fork guard.

The worker's main process forks pool processes while its threads (presence,
metrics scrapes) connect to Redis and RabbitMQ, over TLS when configured.
A fork copies OpenSSL's locks as they are at that instant: one held by a
thread in the middle of a handshake stays held for ever in the child, whose
own first handshake then hangs.  ``worker.fork_safety.ForkGuard`` makes a
fork wait until no thread is inside its network I/O.

Each mode runs in an interpreter of its own (fork hooks cannot be removed):
a thread does TLS handshakes over a socket pair in a loop (inside
``guard.io()`` when guarded) while the main thread forks; each child makes
one handshake of its own and exits.  A child not done within
``--child-timeout`` seconds counts as hung and is killed.  This measures a
rate, not a speed: it is a figure for the guard's comment and the docs, not
a test (a hang is rare, a few per thousand forks, so a test of it would be
slow or flaky).

    python -m bench.fork_tls --forks 1000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from testing import certs


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> None:
    near, far = socket.socketpair()
    with near, far:
        other = threading.Thread(target=lambda: server.wrap_socket(far, server_side=True).close())
        other.start()
        client.wrap_socket(near, server_hostname="localhost").close()
        other.join()


def contexts(made: certs.Certificates) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(made.server_cert, made.server_key)
    return ssl.create_default_context(cafile=str(made.ca)), server


def run_mode(guarded: bool, forks: int, child_timeout: float, made: certs.Certificates) -> tuple[int, float]:
    """In this interpreter: fork ``forks`` times while a thread handshakes; the hung children and the time."""
    from worker.fork_safety import ForkGuard

    guard = ForkGuard()
    if guarded:
        guard.register()
    stop = threading.Event()
    handshakes: list[int] = []

    def busy() -> None:
        while not stop.is_set():
            with guard.io() if guarded else contextlib.nullcontext():
                client, server = contexts(made)  # a new context each time, as redis-py's connects make
                handshake(client, server)
            handshakes.append(1)

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    hung, started = 0, time.monotonic()
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.alarm(int(child_timeout) + 5)  # never outlive the benchmark
                handshake(*contexts(made))
                code = 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + child_timeout
        while (status := os.waitpid(pid, os.WNOHANG)) == (0, 0):
            if time.monotonic() > deadline:
                hung += 1
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.002)
        else:
            assert os.waitstatus_to_exitcode(status[1]) == 0, "a child's handshake failed"
    stop.set()
    thread.join()
    assert handshakes, "the thread made no handshake"
    return hung, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=1000)
    parser.add_argument("--child-timeout", type=float, default=3.0)
    parser.add_argument("--mode", choices=("bare", "guarded"), help=argparse.SUPPRESS)  # one interpreter per mode
    args = parser.parse_args(argv)
    if args.mode:
        with tempfile.TemporaryDirectory() as directory:
            made = certs.make(Path(directory))
            hung, took = run_mode(args.mode == "guarded", args.forks, args.child_timeout, made)
        print(f"{args.mode}: {hung} of {args.forks} children hung ({took:.0f} s)", flush=True)
        return 0
    for mode in ("bare", "guarded"):
        argv_mode = [sys.executable, "-m", "bench.fork_tls", "--mode", mode]
        argv_mode += ["--forks", str(args.forks), "--child-timeout", str(args.child_timeout)]
        subprocess.run(argv_mode, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
