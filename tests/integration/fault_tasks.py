"""Tasks only the fault tests load: the worker gets ``TASK_MODULES=tests.integration.fault_tasks``.

They are never in the default catalogue and never in the production image.
"""

from __future__ import annotations

import os
import signal

from workqueue.catalogue import task

MODULE = __name__


@task
def crash() -> None:
    """Kill the worker process running it (a poison message)."""
    os.kill(os.getpid(), signal.SIGKILL)
