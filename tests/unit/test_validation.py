"""Validation at a bounded cost: the same verdicts as jsonschema, a fraction of the CPU and memory.

The figures this replaced (jsonschema over the whole instance, every error
collected and sorted) on the 2-core development machine: ``xsum`` with
10,000 wrong items took ~600 ms of CPU and ~34 MB; 40,000 wrong items
(156 KB, within the 256 KB body limit) ~2.6 s and ~134 MB; 10,000 valid
numbers ~56 ms.  The bounds asserted below sit far under those and far above
what the bounded validator measures (under 10 ms, under 1 MB): a stalled
worker, not a speed.  Speed is a ratio against jsonschema in the same run.
"""

import json
import math
import time
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from workqueue import catalogue
from workqueue.catalogue import ValidationFailed
from workqueue.validation import ArgumentValidator, cheap_first, plain_check

XSUM = catalogue.load()["xsum"]
MAX_BODY = 256 * 1024


def cost(task: catalogue.TaskDefinition, args: list) -> tuple[float, int, str]:
    """(CPU seconds, peak bytes allocated, the error message or "ok") of one validation."""
    task.bind([[1]], {})  # the validator is built once per process, not per request
    tracemalloc.start()
    started = time.process_time()
    try:
        task.bind(args, {})
        outcome = "ok"
    except ValidationFailed as exc:
        outcome = exc.message
    seconds = time.process_time() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak, outcome


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        (["not a number"] * 10_000, "argument 'numbers.0': 'not a number' is not of type 'number'"),
        ([[[1, 2, 3]]] * 10_000, "argument 'numbers.0': [[1, 2, 3]] is not of type 'number'"),
        # Too many items, each wrong: the length is refused before any item is looked at.
        (["x"] * 40_000, "argument 'numbers': ['x', 'x'"),
        ([2**60] * 10_000, "argument 'numbers.0': 1152921504606846976 is greater than the maximum"),
        ([1.5] * 10_000, "ok"),
    ],
)
def test_a_body_within_every_limit_costs_little_to_validate(numbers, message):
    assert len(json.dumps({"task": "xsum", "args": [numbers]})) <= MAX_BODY
    seconds, peak, outcome = cost(XSUM, [numbers])
    assert outcome.startswith(message) or message in outcome
    assert seconds < 0.25, f"{seconds * 1000:.0f} ms of CPU"
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB"


def test_valid_plain_items_cost_a_fraction_of_jsonschemas_check():
    numbers = [1.5] * 10_000
    ours = min(cost(XSUM, [numbers])[0] for _ in range(3))
    plain = Draft202012Validator(XSUM.schema)
    instance = {"numbers": numbers}
    started = time.process_time()
    assert plain.is_valid(instance)
    theirs = time.process_time() - started
    assert ours < 0.5 * theirs, f"{ours * 1000:.1f} ms against jsonschema's {theirs * 1000:.1f} ms"


def test_a_huge_value_is_echoed_briefly():
    """A wrong type or size is worded from a bounded repr: wording the whole value took 40 ms for 40,000 items."""

    def fastest(action) -> float:
        times = []
        for _ in range(3):
            started = time.process_time()
            action()
            times.append(time.process_time() - started)
        return min(times)

    def refuse(value) -> str:
        with pytest.raises(ValidationFailed) as caught:
            XSUM.bind([value], {})
        return caught.value.message

    for value, ending in (
        (["x"] * 40_000, "is too long"),
        ({str(i): i for i in range(20_000)}, "is not of type 'array'"),
    ):
        message = refuse(value)
        assert message.endswith(ending) and "..." in message and len(message) < 120, message
        # Less than one repr of the value: it is never worded whole.
        assert fastest(lambda v=value: refuse(v)) < fastest(lambda v=value: repr(v))


def test_an_oversized_list_is_refused_for_its_length():
    with pytest.raises(ValidationFailed) as caught:
        XSUM.bind([["x"] * 10_001], {})
    assert caught.value.message.endswith("is too long")


def test_cheap_keywords_come_first_and_nothing_is_lost():
    schema = XSUM.schema
    reordered = cheap_first(schema)
    assert reordered == schema  # same keywords, same values
    numbers = reordered["properties"]["numbers"]
    assert list(numbers)[:2] == ["type", "maxItems"] and list(numbers).index("items") > 1
    assert list(schema["properties"]["numbers"]).index("items") < list(schema["properties"]["numbers"]).index(
        "maxItems"
    ), "pydantic writes items first: what the reordering is for"


BOUNDED = [
    {"type": "number", "minimum": -(2**53), "maximum": 2**53},
    {"type": "integer", "minimum": 0, "maximum": 50_000},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "string", "minLength": 2, "maxLength": 5, "title": "S"},
]
VALUES = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
    st.sampled_from([0, 1, 2.0, -0.0, 2**53, 2**53 + 1, 50_000, 50_001, math.inf, "ab", "abcdef"]),
    st.lists(st.integers(), max_size=2),
)


@pytest.mark.parametrize("schema", BOUNDED)
@given(value=VALUES)
def test_the_quick_check_never_vouches_for_what_jsonschema_refuses(schema, value):
    check = plain_check(schema)
    assert check is not None
    if check(value):
        assert Draft202012Validator(schema).is_valid(value)


@pytest.mark.parametrize("schema", BOUNDED)
@given(values=st.lists(VALUES, max_size=6))
def test_arrays_get_the_verdict_jsonschema_gives(schema, values):
    array = {"type": "array", "items": schema, "maxItems": 4}
    bounded = ArgumentValidator(array).first_error(values)
    assert (bounded is None) == Draft202012Validator(array).is_valid(values)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": ["number", "string"]},
        {"type": "number", "multipleOf": 2},
        {"type": "string", "pattern": "^a"},
        {"anyOf": [{"type": "number"}]},
        {"type": "array"},
        True,
    ],
)
def test_other_schemas_are_left_to_jsonschema(schema):
    assert plain_check(schema) is None
