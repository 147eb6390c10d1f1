"""A pool process forked while a worker thread is inside a first import can still do what that thread did.

A process forked while another thread is inside an import inherits the
module's import lock, held by a thread that does not exist in the child, and
hangs for ever on its own first import of that module.  ``worker/fork_safety.py``
settles, before any thread exists, what the worker's threads import lazily:
the ``idna`` codec (getaddrinfo's first lookup of a host name) and
``librabbitmq`` (every ``kombu.Connection`` to ``amqp://`` tries it).

The race is made certain here, in a fresh interpreter (pytest has long
imported what matters): an import hook holds any thread but the main one
inside the module's execution (where only the module's own lock is held)
until the main thread has forked.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

FORK_DURING_FIRST_USE = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, os, signal, socket, sys, threading

    mode, module = sys.argv[1:]
    if module == "encodings.idna":
        def first_use():
            socket.getaddrinfo("localhost", 6379)
    else:
        import kombu
        def first_use():
            kombu.Connection("amqp://guest:guest@127.0.0.1:1//")  # no connect: the transport is chosen

    # Set by the thread inside the module's execution, or after first_use
    # when there was nothing to hold (settled already, or not installed).
    ready, forked = threading.Event(), threading.Event()
    seen = []

    class HoldImport(importlib.abc.MetaPathFinder):
        # find_spec runs under the global import lock, which os.fork also
        # takes: the hold is in exec_module, where only the module's lock is held.
        def find_spec(self, name, path, target=None):
            if name != module or threading.current_thread() is threading.main_thread():
                return None
            seen.append("tried")
            spec = importlib.machinery.PathFinder.find_spec(name, path, target)
            if spec is not None:
                spec.loader = Held(spec.loader)
            return spec

    class Held(importlib.abc.Loader):
        def __init__(self, loader):
            self.loader = loader

        def create_module(self, spec):
            return self.loader.create_module(spec)

        def exec_module(self, new_module):
            seen.append("held")
            ready.set()
            forked.wait(30)
            self.loader.exec_module(new_module)

    sys.meta_path.insert(0, HoldImport())
    if mode == "worker":
        import worker.main  # noqa: F401

    def in_thread():
        first_use()
        ready.set()

    thread = threading.Thread(target=in_thread)
    thread.start()
    ready.wait(30)
    pid = os.fork()
    if pid == 0:  # the "pool process"
        signal.alarm(5)  # a hang dies by SIGALRM
        first_use()
        os._exit(0)
    forked.set()
    thread.join()
    _, status = os.waitpid(pid, 0)
    done = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    print(f"import {seen[-1] if seen else 'none'}, child {'done' if done else 'hung'}")
    """
)
MODULES = ("encodings.idna", "librabbitmq")


def fork_during_first_use(mode: str, module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", FORK_DURING_FIRST_USE, mode, module], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("module", MODULES)
def test_a_process_forked_during_a_threads_first_import_is_not_stuck_in_the_worker(module):
    assert fork_during_first_use("worker", module) == "import none, child done"


def test_without_the_workers_settled_imports_such_a_process_hangs():
    # The negative control: the same race in a bare interpreter deadlocks,
    # so the test above passes because of what worker.main settles.
    assert fork_during_first_use("bare", "encodings.idna") == "import held, child hung"


def test_without_the_workers_settled_imports_a_connection_tries_librabbitmq_in_the_thread():
    # Its import fails at once, so there is no execution to hold and no
    # certain hang (its window is between two finders); the control shows
    # the import the worker's settling prevents.
    assert fork_during_first_use("bare", "librabbitmq") == "import tried, child done"
