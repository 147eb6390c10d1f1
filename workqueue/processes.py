"""Process facts shared by the metrics directory, the local session file and the test servers."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether a process of this id exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
