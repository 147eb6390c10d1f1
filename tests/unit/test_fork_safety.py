"""A pool process forked while a worker thread resolves its first host name can still resolve names.

getaddrinfo imports the ``idna`` codec on a process's first lookup of a
host name.  The worker's threads (presence, probes, metrics) make such
lookups while the prefork pool forks its processes; a process forked in the
middle of that import inherits the module's import lock, held by a thread
that does not exist in the child, and hangs on its first connect for ever.
``worker/main.py`` imports the codec before any thread exists.

The race is made certain here, in a fresh interpreter (pytest has long
imported the codec): an import hook holds any thread but the main one inside
the codec's import until the main thread has forked.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

FORK_DURING_LOOKUP = textwrap.dedent(
    """
    import importlib.abc, os, signal, socket, sys, threading

    # Set by the thread inside the codec's import, or after its lookup when
    # the codec was loaded already (no import, nothing held).
    ready, forked = threading.Event(), threading.Event()
    held = []

    class HoldIdnaImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "encodings.idna" and threading.current_thread() is not threading.main_thread():
                held.append(name)  # the import lock of encodings.idna is held from here
                ready.set()
                forked.wait(30)
            return None  # the normal finders import it

    def first_lookup():
        socket.getaddrinfo("localhost", 6379)
        ready.set()

    sys.meta_path.insert(0, HoldIdnaImport())
    if sys.argv[1] == "worker":
        import worker.main  # noqa: F401

    lookup = threading.Thread(target=first_lookup)
    lookup.start()
    ready.wait(30)
    pid = os.fork()
    if pid == 0:  # the "pool process"
        signal.alarm(5)  # a hang dies by SIGALRM
        socket.getaddrinfo("localhost", 6379)
        os._exit(0)
    forked.set()
    lookup.join()
    _, status = os.waitpid(pid, 0)
    resolved = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    print("import held" if held else "no import", "child", "resolved" if resolved else "hung")
    """
)


def fork_during_first_lookup(imports: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", FORK_DURING_LOOKUP, imports], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_process_forked_during_a_threads_first_lookup_resolves_names_in_the_worker():
    assert fork_during_first_lookup("worker") == "no import child resolved"


def test_without_the_workers_imports_such_a_process_hangs():
    # The negative control: the same race in a bare interpreter deadlocks,
    # so the test above passes because of what worker.main loads.
    assert fork_during_first_lookup("bare") == "import held child hung"
