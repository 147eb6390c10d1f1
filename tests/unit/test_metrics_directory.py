"""The multiprocess metrics directory stays bounded, and no count is lost or counted twice.

Processes that exit (replaced pool processes, gunicorn workers) leave their
files behind; a scrape folds them into one archive per type
(``workqueue/prometheus.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from workqueue import prometheus

CHILD = """
from prometheus_client import Counter, Histogram
Counter("jobs", "Jobs done", ["kind"]).labels("add").inc(2)
Histogram("job_seconds", "Job time", buckets=(1, 10)).observe(0.5)
"""


def run_children(directory: Path, count: int) -> None:
    """``count`` processes that each count 2 jobs and one observation, then exit."""
    for _ in range(count):
        env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, timeout=60)


def scrape() -> str:
    return generate_latest(prometheus.scrape_registry()).decode()


def value(text: str, line_start: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(line_start)).split()[-1])


def test_a_scrape_folds_the_files_of_exited_processes_and_keeps_their_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    run_children(tmp_path, 5)
    assert len(list(tmp_path.glob("*.db"))) == 10, "one counter and one histogram file per exited process"
    first = scrape()
    assert value(first, 'jobs_total{kind="add"}') == 10
    assert value(first, "job_seconds_count") == 5
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_archive.db", "histogram_archive.db"]
    run_children(tmp_path, 3)
    second = scrape()
    assert value(second, 'jobs_total{kind="add"}') == 16, "the archive's sums and the new files, each once"
    assert value(second, 'job_seconds_bucket{le="1.0"}') == 8
    assert len(list(tmp_path.glob("*.db"))) == 2


def test_the_files_of_live_processes_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    live = tmp_path / f"counter_{os.getpid()}.db"
    live.write_bytes(b"")  # this process: alive
    assert prometheus.compact(str(tmp_path)) == 0 and live.exists()


@pytest.mark.parametrize("name", ["gauge_livesum_999999.db", "gauge_all_999999.db"])
def test_an_exited_processs_gauges_are_dropped(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    assert prometheus.compact(str(tmp_path)) == 1 and not (tmp_path / name).exists()


def test_a_scrape_leaves_out_a_file_another_process_is_creating(tmp_path, monkeypatch):
    """prometheus-client creates a file empty, then sizes it: read in between, it failed the scrape (a 500)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    run_children(tmp_path, 1)
    (tmp_path / f"counter_{os.getpid()}.db").write_bytes(b"")  # a live process, between create and size
    assert value(scrape(), 'jobs_total{kind="add"}') == 2


def test_an_exited_process_that_died_creating_its_file_is_dropped_without_a_count(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    run_children(tmp_path, 1)
    (tmp_path / "counter_999999.db").write_bytes(b"")
    assert value(scrape(), 'jobs_total{kind="add"}') == 2
    assert not (tmp_path / "counter_999999.db").exists()
