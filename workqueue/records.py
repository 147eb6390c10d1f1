"""Submission records: what was submitted, kept in Redis beside the results.

A record is JSON with its arguments last (``kwargs``, then ``args`` for a
task sent to Celery directly whose positional arguments could not be named),
so a list reads only the part before ``, "kwargs": `` (``TaskClient``).
The API writes one before it publishes; a worker writes one for a task that
reached it without (``worker/direct.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

RECORD_PREFIX = "workqueue-submitted-"
ARGUMENTS = ("kwargs", "args")


def record_json(record: Mapping[str, Any]) -> str:
    """A submission record as JSON, its arguments last: a list reads only what comes before them."""
    fields = {key: value for key, value in record.items() if key not in ARGUMENTS}
    for name in ARGUMENTS:
        if name in record:
            fields[name] = record[name]
    return json.dumps(fields)
