"""Batch mode of submit_tasks.py (what a Job runs): its input checks, its summary line and its exit code.

Over the stand-in client, whose tasks finish when the test says so; the
same batch against RabbitMQ and Redis, through ``run.sh submit``, is
tests/integration/test_batch.py.
"""

from __future__ import annotations

import uuid

import pytest
from celery import states

from cli import batch as batch_module
from cli.batch import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_TERMINATED, BadInput, Batch, read_lines
from cli.submit_tasks import parse_args, run_batch
from workqueue.client import DependencyUnavailable, IdempotencyConflict
from workqueue.publisher import PublishUnconfirmed


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    monkeypatch.setattr(batch_module, "POLL_SECONDS", 0.001)


def items(task_client, *lines):
    return read_lines(task_client.catalogue, lines)


def run(task_client, lines, outcome=None, timeout=5.0, **options):
    """Run a batch of ``lines``; each submitted task ends as ``outcome(kwargs)`` says (None: stays queued)."""
    printed: list[str] = []
    describe_many = task_client.describe_many

    def finish_then_describe(task_ids):
        for task_id in task_ids:
            kwargs = task_client.records[task_id]["kwargs"]
            final = outcome(kwargs) if outcome else states.SUCCESS
            if final is not None:
                result = kwargs.get("x", 0) + kwargs.get("y", 0) if final == states.SUCCESS else None
                task_client.views[task_id].update(state=final, result=result)
        return describe_many(task_ids)

    task_client.describe_many = finish_then_describe
    job = Batch(task_client, items(task_client, *lines), printed.append, timeout, **options)
    job.stop.wait = lambda seconds: job.stop.is_set()  # no real pauses between attempts
    return job, job.run(), printed


ADDS = [
    '{"task": "add", "args": [1, 2]}',
    '{"task": "add", "kwargs": {"x": 3, "y": 4}}',
    "",
    '{"task": "mul", "args": [2, 3]}',
]


def test_every_task_succeeding_is_exit_0_with_a_line_per_task_and_a_summary(task_client):
    _, code, printed = run(task_client, ADDS)
    assert code == EXIT_OK
    submitted = [line for line in printed if line.startswith("submitted ")]
    assert len(submitted) == 3 and submitted[0].endswith(" add(x=1, y=2)")
    finished = sorted(line.split(" ", 1)[0] for line in printed if " -> SUCCESS " in line)
    assert finished == ["[1/3]", "[2/3]", "[3/3]"]
    assert printed[-1] == "batch: 3 tasks, 3 submitted, 3 succeeded, 0 failed, 0 still pending"


def test_a_failure_is_exit_1(task_client):
    _, code, printed = run(
        task_client, ADDS, outcome=lambda kwargs: states.FAILURE if kwargs["x"] == 3 else states.SUCCESS
    )
    assert code == EXIT_FAILED
    assert printed[-1] == "batch: 3 tasks, 3 submitted, 2 succeeded, 1 failed, 0 still pending"


def test_tasks_still_pending_at_the_timeout_are_exit_1_and_listed(task_client):
    job, code, printed = run(
        task_client, ADDS, outcome=lambda kwargs: None if kwargs["x"] == 2 else states.SUCCESS, timeout=0.2
    )
    assert code == EXIT_FAILED
    (pending,) = job.outcome.pending
    assert printed[-2] == "batch: 3 tasks, 3 submitted, 2 succeeded, 0 failed, 1 still pending"
    assert printed[-1] == f"still pending (queued, they will run): {pending}"


def test_without_waiting_it_is_exit_0_once_every_task_is_confirmed(task_client):
    _, code, printed = run(task_client, ADDS, outcome=lambda kwargs: None, wait=False)
    assert code == EXIT_OK
    assert printed[-1] == "batch: 3 tasks, 3 submitted (queued; not waited for)"
    assert "describe_many" not in [call for call, _ in task_client.calls]


def test_under_a_key_the_ith_task_is_submitted_as_key_i_and_a_rerun_submits_nothing_new(task_client):
    run(task_client, ADDS, idempotency_key="batch-job")
    assert sorted(task_client.keys) == ["batch-job:0", "batch-job:1", "batch-job:2"]
    before = len(task_client.views)
    _, code, printed = run(task_client, ADDS, idempotency_key="batch-job")
    assert code == EXIT_OK and len(task_client.views) == before
    assert all(
        "(already submitted under its idempotency key)" in line for line in printed if line.startswith("submitted")
    )


def test_an_outage_while_submitting_is_waited_out(task_client):
    task_client.fail("submit", DependencyUnavailable("broker", ConnectionRefusedError(111, "refused")), times=2)
    _, code, printed = run(task_client, ADDS[:1])
    assert code == EXIT_OK
    assert [line.split(":")[0] for line in printed[:2]] == ["could not submit add(x=1, y=2)"] * 2
    assert printed[-1].startswith("batch: 1 tasks, 1 submitted, 1 succeeded")


def test_an_outage_that_outlasts_the_timeout_says_what_was_not_submitted(task_client):
    task_client.fail("submit", DependencyUnavailable("broker", ConnectionRefusedError(111, "refused")))
    _, code, printed = run(task_client, ADDS, timeout=0.05)
    assert code == EXIT_FAILED
    assert printed[-1] == "batch: 3 tasks, 0 submitted, 0 succeeded, 0 failed, 0 still pending, 3 not submitted"


def test_an_unconfirmed_publish_is_repeated_under_the_key_it_names(task_client):
    unconfirmed = PublishUnconfirmed(str(uuid.uuid4()), TimeoutError("no confirm"))
    unconfirmed.idempotency_key = "its-own-key"
    task_client.fail("submit", unconfirmed, times=1)
    job, code, printed = run(task_client, ADDS[:1])
    assert printed[0].startswith("add(x=1, y=2): task ") and printed[0].endswith("repeating under its idempotency key")
    (repeat,) = [args for call, args in task_client.calls if call == "submit_once"]
    assert repeat[2] == "its-own-key"
    assert code == EXIT_OK and job.outcome.unconfirmed == [unconfirmed.task_id]


def test_an_unconfirmed_publish_never_confirmed_is_counted(task_client):
    unconfirmed = PublishUnconfirmed(str(uuid.uuid4()), TimeoutError("no confirm"))
    unconfirmed.idempotency_key = "k"
    task_client.fail("submit", unconfirmed)
    task_client.fail("submit_once", unconfirmed)
    _, code, printed = run(task_client, ADDS[:1], timeout=0.05, wait=False)
    assert code == EXIT_FAILED
    assert (
        printed[-1]
        == "batch: 1 tasks, 0 submitted (queued; not waited for), 1 unconfirmed by the broker (they may be queued)"
    )


def test_a_key_used_for_another_request_is_refused_and_counted(task_client):
    task_client.fail("submit_once", IdempotencyConflict("mismatch", "earlier-task"), times=1)
    _, code, printed = run(task_client, ADDS[:2], idempotency_key="reused", wait=False)
    assert printed[0] == "could not submit add(x=1, y=2): key reused:0 was used for another request (task earlier-task)"
    assert code == EXIT_FAILED
    # The refused task is counted among those not submitted, and says why.
    summary = "batch: 2 tasks, 1 submitted (queued; not waited for), 1 not submitted, 1 refused"
    assert printed[-1] == summary + " (their key was used for another request)"


def test_another_request_publishing_under_the_key_is_waited_for(task_client):
    task_client.fail("submit_once", IdempotencyConflict("in_progress", "t"), times=1)
    _, code, printed = run(task_client, ADDS[:1], idempotency_key="busy")
    assert printed[0] == "add(x=1, y=2): another request with key busy:0 is publishing it; waiting"
    assert code == EXIT_OK


def test_sigterm_is_exit_143_and_loses_nothing_already_queued(task_client):
    printed: list[str] = []
    job = Batch(task_client, items(task_client, *ADDS), printed.append, timeout=5.0)
    job.stop.set()  # what the SIGTERM handler does
    assert job.run() == EXIT_TERMINATED
    assert printed == ["batch: 3 tasks, 0 submitted, 0 succeeded, 0 failed, 0 still pending, 3 not submitted"]


def test_a_long_result_is_cut_short_in_its_progress_line(task_client):
    task_id = task_client.add()
    task_client.views[task_id].update(state=states.SUCCESS, result="7" * 1000)
    job = Batch(task_client, [], [].append, timeout=1.0)
    job.outcome.submitted[task_id] = "pi(digits=1000)"
    printed: list[str] = []
    job.out = printed.append
    job._wait()
    assert printed == [f'[1/1] {task_id} pi(digits=1000) -> SUCCESS "{"7" * 199}… (1002 characters)']


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        (["not json"], "line 1: not JSON"),
        (
            ["", '{"task": "add", "args": [1, 2]}', "[1, 2]"],
            'line 3: expected {"task": ..., "args": [...], "kwargs": {...}}',
        ),
        (['{"task": "add", "args": [1, 2], "queue": "x"}'], "line 1: expected"),
        (['{"task": "add", "args": {"x": 1}}'], "line 1: args must be a JSON array and kwargs a JSON object"),
        (['{"task": "nope"}'], "line 1: unknown task 'nope'; submittable tasks: add"),
        (['{"task": "add", "args": [1]}'], "line 1: add: 'y' is a required property"),
        (["", "  "], "no tasks in the input"),
    ],
)
def test_bad_input_names_its_first_bad_line(task_client, lines, says):
    with pytest.raises(BadInput) as refused:
        read_lines(task_client.catalogue, lines)
    assert str(refused.value).startswith(says)


def test_bad_input_is_exit_2_and_submits_nothing(task_client, tmp_path, capsys):
    source = tmp_path / "tasks.jsonl"
    source.write_text('{"task": "add", "args": [1, 2]}\n{"task": "add", "args": ["x", 2]}\n')
    args = parse_args(["--from", str(source)], list(task_client.catalogue))
    assert run_batch(task_client, args, print) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "submit_tasks: line 2: add: argument 'x': 'x' is not of type 'number'\n"
    assert task_client.calls == []
    missing = parse_args(["--from", str(tmp_path / "missing.jsonl")], list(task_client.catalogue))
    assert run_batch(task_client, missing, print) == EXIT_BAD_INPUT
    assert "cannot read" in capsys.readouterr().err
