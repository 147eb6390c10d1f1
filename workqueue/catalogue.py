"""Task definitions: one typed function each, and everything derived from it.

A task is a plain function decorated with ``@task``::

    @task
    def add(x: SafeNumber, y: SafeNumber) -> float:
        \"\"\"Return x + y.\"\"\"
        return x + y

From that one definition come the catalogue entry (name, summary from the
docstring's first line, parameters in signature order), the JSON Schema of
the arguments (pydantic builds it from the type hints and their
``Field``/``Annotated`` constraints), validation of every submission,
``GET /catalogue``, the OpenAPI document, and the Celery task the worker
registers (``worker/celery_tasks.py``).  A function whose first parameter is
annotated ``TaskContext`` receives the running task's context (id,
retries, progress reporting) without importing Celery.

Validation runs jsonschema against the very schema that is published, so
what ``/openapi.json`` documents is exactly what is accepted (pydantic's own
validation differs from its JSON Schema in corners such as 2.0 for an
integer), at a cost bounded by ``workqueue/validation.py``.  Only
catalogued names can be submitted: never Celery internals such as
``celery.chord_unlock``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pydantic
from jsonschema import ValidationError

from workqueue import validation
from workqueue.celery_app import DEFAULT_QUEUE
from workqueue.validation import ArgumentValidator

DEFAULT_MODULES = ("workqueue.tasks",)
CELERY_PREFIX = "workqueue."


class ValidationFailed(ValueError):
    """The task name or its arguments do not match the catalogue."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DefinitionError(TypeError):
    """A ``@task`` function cannot be turned into a catalogue entry."""


@dataclasses.dataclass(frozen=True)
class TaskContext:
    """What a running task may know and do; the worker fills it in."""

    id: str
    retries: int
    hostname: str | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    routing_key: str | None
    redelivered: bool
    # Stores state PROGRESS with these fields as its meta (GET shows "progress").
    report_progress: Callable[..., None]


@dataclasses.dataclass(frozen=True)
class TaskDefinition:
    """One submittable task, derived from its function."""

    name: str
    function: Callable[..., Any]
    summary: str
    takes_context: bool
    # Ordered: positional ``args`` bind to these names in this order.
    params: tuple[str, ...]
    model: type[pydantic.BaseModel]
    # Celery task options (retries and backoff), handed to the worker as given.
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # The queue it is published to (TASK_ROUTES may send it elsewhere).
    queue: str = DEFAULT_QUEUE

    @property
    def celery_name(self) -> str:
        return CELERY_PREFIX + self.name

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        """JSON Schema of the task's arguments, as keyword arguments."""
        return self.model.model_json_schema()

    @property
    def required(self) -> int:
        """How many leading parameters are required."""
        return len(self.schema.get("required", ()))

    @functools.cached_property
    def _validator(self) -> ArgumentValidator:
        return ArgumentValidator(self.schema)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``args``/``kwargs`` against the schema; return them as kwargs."""
        if len(args) > len(self.params):
            raise ValidationFailed(
                "invalid_arguments",
                f"{self.name} takes at most {len(self.params)} positional arguments ({len(args)} given)",
            )
        bound = dict(zip(self.params, args, strict=False))
        for name in kwargs:
            if name in bound:
                raise ValidationFailed(
                    "invalid_arguments", f"{self.name} got argument {name!r} both positionally and by keyword"
                )
        bound.update(kwargs)
        first = self._validator.first_error(bound)
        if first is not None:
            where = ".".join(str(p) for p in first.absolute_path)
            prefix = f"argument {where!r}: " if where else ""
            raise ValidationFailed("invalid_arguments", f"{self.name}: {prefix}{_describe(first)}")
        return bound

    def describe(self) -> dict[str, Any]:
        """The catalogue entry served over HTTP."""
        return {"name": self.name, "summary": self.summary, "params": list(self.params), "schema": self.schema}


def define(
    function: Callable[..., Any], name: str | None = None, queue: str = DEFAULT_QUEUE, **options: Any
) -> TaskDefinition:
    """The definition of ``function`` (what ``@task`` records)."""
    name = name or function.__name__
    summary = (inspect.getdoc(function) or "").strip().splitlines()
    if not summary:
        raise DefinitionError(f"task {name!r} needs a docstring: its first line is the catalogue summary")
    hints = typing.get_type_hints(function, include_extras=True)
    parameters = list(inspect.signature(function).parameters.values())
    takes_context = bool(parameters) and hints.get(parameters[0].name) is TaskContext
    fields: dict[str, Any] = {}
    for parameter in parameters[takes_context:]:
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            raise DefinitionError(f"task {name!r}: parameter {parameter.name!r} must be a plain named parameter")
        if parameter.name not in hints:
            raise DefinitionError(f"task {name!r}: parameter {parameter.name!r} needs a type hint")
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], default)
    model = pydantic.create_model(name, __config__=pydantic.ConfigDict(extra="forbid"), **fields)
    return TaskDefinition(name, function, summary[0], takes_context, tuple(fields), model, options, queue)


# Definitions by the module that holds them; ``load`` picks the modules.
_DEFINED: dict[str, dict[str, TaskDefinition]] = {}


def task(
    function: Callable[..., Any] | None = None, *, name: str | None = None, queue: str = DEFAULT_QUEUE, **options: Any
) -> Any:
    """Decorator: make ``function`` a task; returns the function unchanged.

    ``queue`` is the queue it goes to (a worker pool consumes it); ``options``
    are Celery task options for the worker, e.g.
    ``autoretry_for=(TransientError,), max_retries=3, retry_backoff=1``.
    """

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        definition = define(function, name, queue, **options)
        _DEFINED.setdefault(function.__module__, {})[definition.name] = definition
        return function

    return register(function) if function is not None else register


class Catalogue(Mapping[str, TaskDefinition]):
    """The submittable tasks of one process: ``load(modules)`` builds it."""

    def __init__(self, definitions: Mapping[str, TaskDefinition]) -> None:
        self._definitions = dict(definitions)

    def __getitem__(self, name: str) -> TaskDefinition:
        return self._definitions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._definitions)

    def __len__(self) -> int:
        return len(self._definitions)

    def lookup(self, name: Any) -> TaskDefinition:
        """The catalogued task called ``name``, or ``ValidationFailed``."""
        if not isinstance(name, str) or name not in self._definitions:
            problem = 'no "task" given' if name is None else f"unknown task {_short(repr(name), 80)}"
            raise ValidationFailed("unknown_task", f"{problem}; submittable tasks: {', '.join(sorted(self))}")
        return self._definitions[name]

    @property
    def queues(self) -> list[str]:
        """Every queue some task goes to, sorted."""
        return sorted({definition.queue for definition in self.values()})

    def public_name(self, celery_name: str | None) -> str | None:
        """``workqueue.add`` -> ``add`` for catalogued tasks; anything else as it is."""
        if celery_name and celery_name.startswith(CELERY_PREFIX):
            name = celery_name.removeprefix(CELERY_PREFIX)
            return name if name in self else celery_name
        return celery_name


def load(extra_modules: Sequence[str] = (), routes: Sequence[str] = ()) -> Catalogue:
    """Import the task modules (``workqueue.tasks`` and ``TASK_MODULES``) and catalogue their tasks.

    ``routes`` (``TASK_ROUTES``: "task=queue" entries) send tasks to other queues.
    """
    definitions: dict[str, TaskDefinition] = {}
    for module in dict.fromkeys((*DEFAULT_MODULES, *extra_modules)):
        importlib.import_module(module)
        for name, definition in _DEFINED.get(module, {}).items():
            if name in definitions:
                raise DefinitionError(f"task {name!r} is defined twice (again in {module})")
            definitions[name] = definition
    for route in routes:
        name, _, queue = route.partition("=")
        if name.strip() not in definitions or not queue.strip():
            raise DefinitionError(f"TASK_ROUTES entry {route!r} must be <catalogued task>=<queue>")
        definitions[name.strip()] = dataclasses.replace(definitions[name.strip()], queue=queue.strip())
    return Catalogue(definitions)


def for_settings(settings: Any) -> Catalogue:
    """The catalogue a process of these settings serves (TASK_MODULES, TASK_ROUTES)."""
    return load(settings.task_modules, settings.task_routes)


def _describe(error: ValidationError) -> str:
    """jsonschema's message, with a long offending value cut short."""
    message = error.message
    if error.validator not in validation.SHORT_ECHO_KEYWORDS:
        shown = repr(error.instance)
        if len(shown) > validation.ECHO_LIMIT:
            message = message.replace(shown, shown[:40] + "...")
    return _short(message)


def _short(message: str, limit: int = 200) -> str:
    """Keep echoes of hostile input short in error messages."""
    return message if len(message) <= limit else message[:limit] + "..."
