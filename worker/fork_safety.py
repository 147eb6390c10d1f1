"""What the worker's threads would import for the first time while the pool forks, settled in the main thread.

A process forked while another thread is inside an import inherits that
module's import lock, held by a thread that does not exist in the child:
the child's own first import of the module then waits for ever.  The prefork
pool forks at start and whenever it replaces a process, while the worker's
threads (presence, probes, metrics, the trace exporter) run, so every module
they import lazily is loaded here first, before any thread or fork exists:

* ``encodings.idna``: getaddrinfo loads it on a first connect by host name.
  Both pool processes of a ready worker hung in ``_ModuleLock.acquire``
  under getaddrinfo on their first Redis connect (py-spy, a fresh-clone run
  of 2026-12-07).
* ``librabbitmq``: every ``kombu.Connection`` to an ``amqp://`` URL tries to
  import it (kombu prefers it when installed); a failed import is not
  remembered, so each metrics scrape tried again.  It is marked absent.
* ``netrc``: ``requests`` loads it on its first request (the trace exporter's).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

LOADED = ("encodings.idna", "netrc")
ABSENT_UNLESS_INSTALLED = ("librabbitmq",)


def settle_imports() -> None:
    for name in LOADED:
        importlib.import_module(name)
    for name in ABSENT_UNLESS_INSTALLED:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]  # "import halted": no lock, no path scan
