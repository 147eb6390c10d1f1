"""submit_tasks.py's choice of tasks: it offers only what it can submit, and says why otherwise."""

import random

import pytest

from cli.submit_tasks import EXAMPLES, example_args, parse_args
from workqueue import catalogue

REFERENCE = list(catalogue.load())
# A catalogue with a task of TASK_MODULES, which has no example arguments.
WITH_OWN = [*REFERENCE, "word_count"]


def test_every_reference_task_has_example_arguments_that_validate():
    rng = random.Random(1)
    for name in REFERENCE:
        catalogue.load()[name].bind((), example_args(name, rng))
    assert set(EXAMPLES) == set(REFERENCE)


def test_a_task_without_examples_is_refused_in_round_mode_with_a_clear_line(capsys):
    with pytest.raises(SystemExit) as caught:
        parse_args(["--task", "word_count", "--count", "1"], WITH_OWN)
    assert caught.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--task word_count: no example arguments" in error and "--batch --task word_count --args" in error


def test_a_task_without_examples_goes_in_batch_mode():
    args = parse_args(["--batch", "--task", "word_count", "--args", '["to be"]'], WITH_OWN)
    assert args.batch_mode and args.task == ["word_count"]
