"""The fault tests' own tally (testing/tally.py): what a line says, and the figures read from them."""

from __future__ import annotations

import os

import pytest

from testing import tally
from testing.tally import DELIVERY, DONE, START, TALLY_ENV, Tally


def test_lines_append_and_read_back_as_counts(tmp_path, monkeypatch):
    path = tmp_path / "tally"
    monkeypatch.setenv(TALLY_ENV, str(path))
    for event, task_id, redelivered in [
        (DELIVERY, "a", False), (START, "a", False), (DONE, "a", False),
        (DELIVERY, "a", True), (START, "a", False), (DONE, "a", False),  # redelivered, ran to its end again
        (DELIVERY, "b", True), (START, "b", False),  # redelivered, killed mid-run
        (DELIVERY, "c", False),  # skipped: a copy of a finished task
    ]:  # fmt: skip
        tally.record(event, task_id, redelivered)
    assert path.read_text().splitlines()[:2] == ["a delivery 0", "a start 0"]
    counted = Tally.read(path)
    assert counted.deliveries == {"a": 2, "b": 1, "c": 1}
    assert counted.redeliveries == {"a": 1, "b": 1, "c": 0}
    assert counted.starts == {"a": 2, "b": 1} and counted.dones == {"a": 2}
    everything = {"a", "b", "c"}
    assert counted.duplicated(everything) == 1
    assert counted.redelivered(everything) == 2
    assert counted.executions(everything) == 3
    # Only the tasks asked about count.
    assert counted.duplicated({"b", "c"}) == 0 and counted.redelivered({"c"}) == 0 and counted.executions({"b"}) == 1


def test_a_process_without_a_tally_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(TALLY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    tally.record(DELIVERY, "a")
    assert os.listdir(tmp_path) == []


def test_a_missing_file_is_an_empty_tally(tmp_path):
    counted = Tally.read(tmp_path / "never-written")
    assert counted.executions({"a"}) == 0 and counted.deliveries == {}


def test_unknown_events_are_ignored_and_malformed_lines_are_an_error(tmp_path):
    path = tmp_path / "tally"
    path.write_text("a delivery 1\na something 0\n")
    assert Tally.read(path).deliveries == {"a": 1}
    path.write_text("a delivery\n")
    with pytest.raises(ValueError):
        Tally.read(path)
