"""The catalogue of submittable tasks: the only names a client may submit.

Shared by the API (validation, ``GET /tasks``, OpenAPI) and by
``submit_tasks.py``.  Each entry describes its parameters as JSON Schema, so
validation, documentation and fuzzing all read the same definition.
Anything not listed here (Celery internals such as ``celery.chord_unlock``,
or tasks registered by some other module) cannot be submitted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

# Numbers are bounded to what every JSON client can represent exactly
# (2**53) so results never overflow to Infinity, which JSON cannot carry.
SAFE_NUMBER = {"type": "number", "minimum": -(2**53), "maximum": 2**53}
# dump_context echoes what it is given: any short string or safe number.
SCALAR = {"type": ["number", "string"], "maxLength": 1000, "minimum": -(2**53), "maximum": 2**53}
MAX_PI_DIGITS = 50_000
MAX_SLEEP_SECONDS = 300
MAX_XSUM_ITEMS = 10_000
MAX_FLAKY_FAILURES = 10


class ValidationFailed(ValueError):
    """The task name or its arguments do not match the catalogue."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One submittable task: its public name, Celery name and parameters."""

    name: str
    summary: str
    # Ordered: positional ``args`` bind to these names in this order.
    params: tuple[tuple[str, Mapping[str, Any]], ...]
    required: int  # how many leading params are required

    @property
    def celery_name(self) -> str:
        return f"workqueue.{self.name}"

    @property
    def schema(self) -> dict[str, Any]:
        """JSON Schema of the task's arguments, as keyword arguments."""
        return {
            "type": "object",
            "properties": {name: dict(schema) for name, schema in self.params},
            "required": [name for name, _ in self.params[: self.required]],
            "additionalProperties": False,
        }

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``args``/``kwargs`` against the schema; return them as kwargs."""
        names = [name for name, _ in self.params]
        if len(args) > len(names):
            raise ValidationFailed(
                "invalid_arguments",
                f"{self.name} takes at most {len(names)} positional arguments ({len(args)} given)",
            )
        bound = dict(zip(names, args, strict=False))
        for name in kwargs:
            if name in bound:
                raise ValidationFailed(
                    "invalid_arguments", f"{self.name} got argument {name!r} both positionally and by keyword"
                )
        bound.update(kwargs)
        errors = sorted(_validator(self).iter_errors(bound), key=lambda e: list(e.absolute_path))
        if errors:
            first = errors[0]
            where = ".".join(str(p) for p in first.absolute_path)
            prefix = f"argument {where!r}: " if where else ""
            raise ValidationFailed("invalid_arguments", f"{self.name}: {prefix}{_describe(first)}")
        return bound


def _describe(error: ValidationError) -> str:
    """jsonschema's message, with a long offending value cut short."""
    shown = repr(error.instance)
    message = error.message
    if len(shown) > 60:
        message = message.replace(shown, shown[:40] + "...")
    return _short(message)


def _short(message: str, limit: int = 200) -> str:
    """Keep echoes of hostile input short in error messages."""
    return message if len(message) <= limit else message[:limit] + "..."


_validators: dict[str, Draft202012Validator] = {}


def _validator(spec: TaskSpec) -> Draft202012Validator:
    if spec.name not in _validators:
        _validators[spec.name] = Draft202012Validator(spec.schema)
    return _validators[spec.name]


CATALOGUE: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("add", "Return x + y.", (("x", SAFE_NUMBER), ("y", SAFE_NUMBER)), required=2),
        TaskSpec("mul", "Return x * y.", (("x", SAFE_NUMBER), ("y", SAFE_NUMBER)), required=2),
        TaskSpec(
            "xsum",
            "Return the sum of a list of numbers.",
            (("numbers", {"type": "array", "items": SAFE_NUMBER, "maxItems": MAX_XSUM_ITEMS}),),
            required=1,
        ),
        TaskSpec(
            "dump_context",
            "Log and return the task's execution context (id, args, delivery info).",
            (("x", SCALAR), ("y", SCALAR)),
            required=2,
        ),
        TaskSpec(
            "pi",
            "Compute pi to the given number of decimal places (CPU-bound).",
            (("digits", {"type": "integer", "minimum": 0, "maximum": MAX_PI_DIGITS}),),
            required=1,
        ),
        TaskSpec(
            "sleep",
            "Sleep the given seconds, reporting progress as state PROGRESS.",
            (("seconds", {"type": "number", "minimum": 0, "maximum": MAX_SLEEP_SECONDS}),),
            required=1,
        ),
        TaskSpec(
            "flaky",
            "Fail the first `failures` attempts, retrying with exponential backoff.",
            (("failures", {"type": "integer", "minimum": 0, "maximum": MAX_FLAKY_FAILURES}),),
            required=1,
        ),
    )
}


def lookup(name: Any) -> TaskSpec:
    """The catalogued task called ``name``, or ``ValidationFailed``."""
    if not isinstance(name, str) or name not in CATALOGUE:
        shown = _short(repr(name), 80)
        raise ValidationFailed(
            "unknown_task", f"unknown task {shown}; submittable tasks: {', '.join(sorted(CATALOGUE))}"
        )
    return CATALOGUE[name]
