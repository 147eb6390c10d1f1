"""Validation against the catalogue: only catalogued names, typed arguments."""

import pytest

from workqueue import catalogue
from workqueue.catalogue import ValidationFailed
from workqueue.tasks import MAX_PI_DIGITS

CATALOGUE = catalogue.load()
lookup = CATALOGUE.lookup


def test_catalogue_lists_every_task_of_the_design():
    assert set(CATALOGUE) == {"add", "mul", "xsum", "dump_context", "pi", "sleep", "flaky"}


@pytest.mark.parametrize(
    "name", ["celery.chord_unlock", "celery.backend_cleanup", "workqueue.add", "", None, 5, ["add"]]
)
def test_only_catalogued_names_are_submittable(name):
    with pytest.raises(ValidationFailed) as caught:
        lookup(name)
    assert caught.value.code == "unknown_task"


def test_positional_and_keyword_arguments_bind_to_parameter_names():
    assert lookup("add").bind([2], {"y": 3}) == {"x": 2, "y": 3}
    assert lookup("xsum").bind([[1, 2]], {}) == {"numbers": [1, 2]}


@pytest.mark.parametrize(
    ("task", "args", "kwargs", "message"),
    [
        ("add", [1], {}, "'y' is a required property"),
        ("add", [1, 2, 3], {}, "at most 2 positional arguments"),
        ("add", ["1", 2], {}, "'1' is not of type 'number'"),
        ("add", [True, 2], {}, "True is not of type 'number'"),
        ("add", [1], {"x": 2}, "both positionally and by keyword"),
        ("add", [1, 2], {"z": 3}, "Additional properties are not allowed"),
        ("add", [2**60, 1], {}, "is greater than the maximum"),
        ("pi", [MAX_PI_DIGITS + 1], {}, "is greater than the maximum of 50000"),
        ("pi", [2.5], {}, "is not of type 'integer'"),
        ("sleep", [-1], {}, "less than the minimum of 0"),
        ("xsum", [[1, "a"]], {}, "argument 'numbers.1'"),
        ("dump_context", ["x" * 2000, 1], {}, "is too long"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(task, args, kwargs, message):
    with pytest.raises(ValidationFailed) as caught:
        lookup(task).bind(args, kwargs)
    assert caught.value.code == "invalid_arguments"
    assert message in caught.value.message
    assert len(caught.value.message) < 400


def test_the_schema_comes_from_the_type_hints():
    schema = CATALOGUE["pi"].schema
    assert schema["properties"]["digits"]["type"] == "integer"
    assert schema["properties"]["digits"]["maximum"] == MAX_PI_DIGITS
    assert schema["required"] == ["digits"] and schema["additionalProperties"] is False
    # The context parameter of a task is not an argument a client sends.
    assert CATALOGUE["sleep"].params == ("seconds",) and CATALOGUE["sleep"].takes_context


def test_a_definition_needs_a_docstring_and_type_hints():
    def undocumented(x: int) -> int:
        return x

    def untyped(x):  # type: ignore[no-untyped-def]
        """Has no hint."""

    with pytest.raises(catalogue.DefinitionError, match="needs a docstring"):
        catalogue.define(undocumented)
    with pytest.raises(catalogue.DefinitionError, match="needs a type hint"):
        catalogue.define(untyped)


def test_task_modules_add_tasks_and_a_name_defined_twice_is_refused():
    extra = catalogue.load(["tests.integration.fault_tasks"])
    assert "crash" in extra and "crash" not in CATALOGUE
    with pytest.raises(catalogue.DefinitionError, match="defined twice"):
        catalogue.load(["tests.unit.duplicate_tasks"])


def test_celery_names_map_back_to_catalogue_names_and_nothing_else_changes():
    assert CATALOGUE.public_name("workqueue.add") == "add"
    assert CATALOGUE.public_name("workqueue.nope") == "workqueue.nope", "not catalogued: shown as it is"
    assert CATALOGUE.public_name("celery.chord_unlock") == "celery.chord_unlock"
    assert CATALOGUE.public_name(None) is None and CATALOGUE["add"].celery_name == "workqueue.add"


def test_task_routes_send_a_task_to_another_queue_and_a_bad_route_is_refused():
    routed = catalogue.load(routes=["pi=slow", " sleep = slow "])
    assert routed["pi"].queue == "slow" and routed["sleep"].queue == "slow" and routed["add"].queue == "celery"
    assert routed.queues == ["celery", "slow"] and CATALOGUE.queues == ["celery"]
    for route in ("nope=slow", "pi=", "pi"):
        with pytest.raises(catalogue.DefinitionError, match="must be <catalogued task>=<queue>"):
            catalogue.load(routes=[route])


def test_a_long_offending_value_is_cut_short_in_the_message():
    with pytest.raises(ValidationFailed) as caught:
        lookup("add").bind(["9" * 5000, 1], {})
    assert caught.value.message.startswith("add: argument 'x': '9999") and "..." in caught.value.message
    assert len(caught.value.message) < 120


def test_the_catalogue_entry_is_what_get_catalogue_serves():
    assert CATALOGUE["add"].describe() == {
        "name": "add", "summary": "Return x + y.", "params": ["x", "y"], "schema": CATALOGUE["add"].schema,
    }  # fmt: skip
    assert CATALOGUE["add"].required == 2 and CATALOGUE["xsum"].required == 1
