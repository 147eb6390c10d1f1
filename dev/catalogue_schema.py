"""The parts of values.schema.json that come from the task catalogue.

A schedule (``schedules.<name>``), the batch Job (``batch``) and a route
(``config.taskRoutes``) name a task and give its arguments, but the chart
cannot run Python to check them: a mistake would surface only when the
CronJob or Job runs, every time, with exit code 2. So the catalogue's own
JSON Schemas (``TaskDefinition.schema``, pydantic's, the one the API
validates submissions against) are copied into the chart's schema, and
``helm install``/``template``/``lint`` refuse a wrong task name or argument,
naming the value. ``python -m dev.values_docs`` writes them with the rest of
the schema; ``tests/k8s/test_schedules.py`` fails when they are out of date.

What is written: ``definitions.taskCall`` (``task`` one of the catalogue's
names; per task, ``kwargs`` restricted to its schema and ``args`` to a tuple
of its parameters in order, each required parameter given exactly once,
positionally or by keyword, as ``TaskDefinition.bind`` demands) and the
task names allowed as keys of ``config.taskRoutes``.
"""

from __future__ import annotations

import copy
from typing import Any

from workqueue import catalogue

# A queue name as worker.pools.<pool>.queues takes it (no comma: WORKER_QUEUES is comma-separated).
QUEUE_PATTERN = "^[A-Za-z0-9_.:-]+$"


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``$ref`` to pydantic's ``$defs`` replaced by its target.

    The fragment lives inside another document, where ``#/$defs/...`` would
    point nowhere; catalogue schemas are not recursive, so inlining ends.
    """
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[1]]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _inline({**copy.deepcopy(target), **rest}, defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in {"$defs", "title"}}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def task_rules(definition: catalogue.TaskDefinition) -> dict[str, Any]:
    """If ``task`` is this one, then ``args``/``kwargs`` must bind to its parameters."""
    schema = definition.schema
    properties = _inline(schema.get("properties", {}), schema.get("$defs", {}))
    required = schema.get("required", [])
    rules: list[dict[str, Any]] = [
        {
            "properties": {
                "kwargs": {"type": "object", "properties": properties, "additionalProperties": False},
                "args": {
                    "type": "array",
                    "items": [properties[name] for name in definition.params],
                    "additionalItems": False,
                },
            }
        }
    ]
    for position, name in enumerate(definition.params):
        positional = {"properties": {"args": {"minItems": position + 1}}, "required": ["args"]}
        by_keyword = {"properties": {"kwargs": {"required": [name]}}, "required": ["kwargs"]}
        # Given at most once: positionally or by keyword, not both.
        rules.append({"not": {"allOf": [positional, by_keyword]}})
        if name in required:
            rules.append({"anyOf": [positional, by_keyword]})
    return {
        "if": {"properties": {"task": {"const": definition.name}}, "required": ["task"]},
        "then": {"allOf": rules},
    }


def task_call() -> dict[str, Any]:
    """``definitions.taskCall``: a task of the catalogue with arguments it accepts."""
    tasks = catalogue.load()
    return {
        "description": (
            "Generated from the task catalogue by `python -m dev.values_docs` (dev/catalogue_schema.py): "
            "a catalogued task and arguments its schema accepts."
        ),
        "properties": {
            "task": {"type": "string", "enum": sorted(tasks)},
            "args": {"type": "array"},
            "kwargs": {"type": "object"},
        },
        "allOf": [task_rules(tasks[name]) for name in sorted(tasks)],
    }


def apply(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (values.schema.json) with its catalogue-derived parts as generated now."""
    schema["definitions"]["taskCall"] = task_call()
    routes = schema["properties"]["config"]["properties"]["taskRoutes"]
    # Listed properties and no others, so a wrong name is reported with its path.
    routes["properties"] = {name: {"type": "string", "pattern": QUEUE_PATTERN} for name in sorted(catalogue.load())}
    routes["additionalProperties"] = False
    return schema
