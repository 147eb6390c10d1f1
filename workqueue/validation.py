"""Validating task arguments against their JSON Schema at a bounded cost.

jsonschema decides what is valid and words every error; this module only
keeps one submission from costing more than its size deserves.  A 256 KB
body within every documented limit (``xsum`` with 10,000 wrong numbers, or
80,000 numbers where 10,000 are allowed) took seconds of CPU and hundreds of
MB, holding every other request of its gevent worker meanwhile.  Three
changes, none of which alters what is accepted:

- cheap keywords first: a schema's keywords are checked in the order they
  are written, and pydantic writes ``items`` before ``maxItems``; the
  validator gets a copy whose size and type keywords come first, so an
  oversized array is refused before any of its items is looked at;
- one error: errors are produced lazily and validation stops at the first,
  which is the one reported (with cheap keywords first, that is the
  outermost problem: a missing argument or an oversized list before a
  wrong item, arguments in the order the function declares them);
- plain items in bulk: jsonschema builds a validator per array item (about
  5 us each); for an ``items`` schema that is a bounded number or string,
  each item is checked with a few comparisons instead, and only an item
  that fails them goes through jsonschema (which then words the error).
  The quick check only ever vouches for values jsonschema accepts;
- short echoes: jsonschema words a wrong type or size as the whole
  offending value's ``repr`` (40 ms for a 40,000-item list, cut to 40
  characters afterwards); for those keywords, which meet the largest
  values, the value is echoed by a bounded ``reprlib`` instead.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Iterator
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

# Keywords that look at an instance's type or size alone, checked before
# those that walk into its items or properties.
CHEAP_KEYWORDS = (
    "type",
    "const",
    "enum",
    "maxItems",
    "minItems",
    "maxLength",
    "minLength",
    "maxProperties",
    "minProperties",
    "required",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
)
# Keywords with no effect on validity.
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"})
PLAIN_TYPES: dict[str, tuple[type, ...]] = {"number": (int, float), "integer": (int,), "string": (str,)}
PLAIN_KEYWORDS = frozenset(
    {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength"}
)

_ITEMS = Draft202012Validator.VALIDATORS["items"]


def _bounded_repr() -> reprlib.Repr:
    """A repr bounded at every level; equal to repr() for values whose repr is short."""
    bounded = reprlib.Repr()  # keyword arguments need Python 3.12
    bounded.maxlevel = 4
    bounded.maxtuple = bounded.maxlist = bounded.maxdict = bounded.maxset = 20
    bounded.maxstring = bounded.maxlong = bounded.maxother = 80
    return bounded


_ECHO = _bounded_repr()
ECHO_LIMIT = 60


def echo(value: Any) -> str:
    """``value`` as an error message shows it: its repr, cut to 40 characters past ECHO_LIMIT, at a bounded cost."""
    shown = _ECHO.repr(value)
    return shown if len(shown) <= ECHO_LIMIT else shown[:40] + "..."


def cheap_first(schema: Any) -> Any:
    """A copy of ``schema`` (and of every subschema) whose cheap keywords come first."""
    if isinstance(schema, list):
        return [cheap_first(part) for part in schema]
    if not isinstance(schema, dict):
        return schema
    first = [key for key in CHEAP_KEYWORDS if key in schema]
    rest = [key for key in schema if key not in CHEAP_KEYWORDS]
    # "properties", "$defs" and the like map names to subschemas; "enum"
    # and "const" are values, never schemas.
    return {key: schema[key] if key in ("enum", "const") else cheap_first(schema[key]) for key in first + rest}


def plain_check(schema: Any) -> Callable[[Any], bool] | None:
    """A quick test for values of a bounded number or string schema, or None for any other schema.

    True only for values jsonschema accepts too; False means "ask jsonschema".
    Exact types: ``bool`` is a subclass of ``int`` but not a JSON number, and
    ``2.0`` (a JSON integer) is left to jsonschema.
    """
    if not isinstance(schema, dict) or not isinstance(schema.get("type"), str) or schema["type"] not in PLAIN_TYPES:
        return None
    if set(schema) - PLAIN_KEYWORDS - ANNOTATIONS:
        return None
    types = PLAIN_TYPES[schema["type"]]
    if schema["type"] == "string":
        shortest, longest = schema.get("minLength", 0), schema.get("maxLength", math.inf)
        return lambda value: type(value) in types and shortest <= len(value) <= longest
    low, high = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
    above, below = schema.get("exclusiveMinimum", -math.inf), schema.get("exclusiveMaximum", math.inf)
    # NaN and infinities compare False somewhere and go to jsonschema.
    return lambda value: type(value) in types and low <= value <= high and above < value < below


def _items(validator: Any, items: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """jsonschema's ``items``, with plain items checked in bulk."""
    check = plain_check(items)
    if check is None or not validator.is_type(instance, "array"):
        yield from _ITEMS(validator, items, instance, schema)
        return
    prefix = len(schema.get("prefixItems", ()))
    for index in range(prefix, len(instance)):
        if not check(instance[index]):
            yield from validator.descend(instance[index], items, path=index)


def _type(validator: Any, types: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """jsonschema's ``type``, echoing the value briefly."""
    types = types if isinstance(types, list) else [types]
    if not any(validator.is_type(instance, kind) for kind in types):
        yield ValidationError(f"{echo(instance)} is not of type {', '.join(repr(kind) for kind in types)}")


def _too_big(kind: str, size: Callable[[Any], int]) -> Callable[..., Iterator[ValidationError]]:
    """jsonschema's ``maxItems``/``maxLength``/``maxProperties``, echoing the value briefly."""

    def check(validator: Any, limit: int, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
        if validator.is_type(instance, kind) and size(instance) > limit:
            yield ValidationError(f"{echo(instance)} {'is expected to be empty' if limit == 0 else 'is too long'}")

    return check


# Keywords whose messages echo the value through echo(): already short.
SHORT_ECHO_KEYWORDS = frozenset({"type", "maxItems", "maxLength", "maxProperties"})
BoundedValidator = validators.extend(
    Draft202012Validator,
    {
        "items": _items,
        "type": _type,
        "maxItems": _too_big("array", len),
        "maxLength": _too_big("string", len),
        "maxProperties": _too_big("object", len),
    },
)


class ArgumentValidator:
    """Validates instances against one schema, stopping at the first error."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._validator = BoundedValidator(cheap_first(schema))

    def first_error(self, instance: Any) -> ValidationError | None:
        return next(self._validator.iter_errors(instance), None)
