"""The load-test report from recorded events: honest axes, nothing hidden, no empty frame, one page.

Drawn with the real matplotlib from events made up here, so each property
can be checked exactly; ``tests/integration/test_loadtest.py`` draws them
from a real run.
"""

from __future__ import annotations

import argparse
import random

import pytest
from matplotlib import image

from loadtest.run import Event, latency_points, percentile, plot, rate_bins, write_page


def events(seconds: float = 10.0, per_second: int = 20, seed: int = 1) -> list[Event]:
    """Submissions at a steady rate from the first instant, each completed 50-150 ms later."""
    rng = random.Random(seed)
    made = []
    for n in range(int(seconds * per_second)):
        at = n / per_second + 0.001
        made.append(Event(at, "POST", "POST /tasks", rng.uniform(2, 8), True))
        made.append(Event(at + 0.1, "TASK", rng.choice(["add", "sleep"]), rng.uniform(50, 150), True))
    return made


def test_rates_are_counted_from_the_first_second_in_whole_seconds():
    edges, rates = rate_bins([0.1, 0.2, 0.9, 1.5, 2.2, 2.3, 2.4], end=3.0)
    assert edges == [0.0, 1.0, 2.0, 3.0]
    assert rates == [3.0, 1.0, 3.0], "the first second counts what happened in it: no ramp from zero"


def test_a_short_last_bin_is_left_out_and_a_longer_one_counts_per_second_of_its_length():
    assert rate_bins([0.5, 1.2], end=1.3) == ([0.0, 1.0], [1.0])
    edges, rates = rate_bins([0.5, 1.2, 1.6], end=1.8)
    assert edges == [0.0, 1.0, 1.8] and rates == [1.0, pytest.approx(2 / 0.8)]


def test_latency_windows_without_events_have_no_point_and_never_a_zero():
    made = [Event(0.5, "POST", "POST /tasks", 4.0, True), Event(3.5, "POST", "POST /tasks", 6.0, True)]
    xs, ys = latency_points(made, 0.5, window=1.0, end=4.0)
    assert xs == [0.5, 3.5] and ys == [4.0, 6.0]


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 0.99)) == (50, 95, 99)
    assert percentile([7.0], 0.95) == 7.0


def test_every_plot_is_drawn_with_its_axes_from_zero_and_its_legend_beside_it(tmp_path):
    queue = [(float(s), s % 4) for s in range(11)]
    written, notes = plot(tmp_path, events(), queue, end=10.4)
    names = [path.name for path in written]
    assert names == ["submit_rate.png", "completion_rate.png", "latency.png", "queue_depth.png"]
    assert notes == []
    for path in written:
        height, width, _ = image.imread(path).shape
        # The legend sits right of the plotting area, so the figure is wider than the 9-inch axes it was given.
        assert width > 900 and 300 < height < 420, (path.name, width, height)


def test_no_queue_samples_give_a_note_instead_of_an_empty_frame(tmp_path):
    written, notes = plot(tmp_path, events(), [], end=10.4)
    assert "queue_depth.png" not in {path.name for path in written}
    assert not (tmp_path / "queue_depth.png").exists()
    assert notes == ["No queue-depth plot: the broker's queue could not be read during the run."]


def test_a_run_where_nothing_was_accepted_draws_nothing_and_says_why(tmp_path):
    refused = [Event(0.5, "POST", "POST /tasks", 3.0, False)]
    written, notes = plot(tmp_path, refused, [], end=2.0)
    assert [path.name for path in written] == ["submit_rate.png"]  # the refusals, drawn
    assert any("no task finished" in note for note in notes)
    assert any("no submission was accepted" in note for note in notes)


def test_the_page_shows_the_verdict_the_summary_the_notes_and_every_plot(tmp_path):
    written, notes = plot(tmp_path, events(), [], end=10.4)
    percentiles = {"50%": 4.0, "95%": 7.0, "99%": 8.0}
    summary = {
        "submitted": 200, "submit_errors": 0, "completed": 199, "failed": 1,
        "submit_rate_per_s": 20.0, "completion_rate_per_s": 19.9,
        "enqueue_latency_ms": percentiles, "completion_latency_ms": percentiles,
        "completion_latency_ms_by_task": {"add": percentiles, "<sleep>": percentiles},
        "queue_depth_max": None, "queue_samples": 0, "duration_seconds": 10.0,
        "plots": [path.name for path in written], "notes": notes,
        "problems": ["1 tasks failed or timed out", "the queue depth was never read"],
    }  # fmt: skip
    args = argparse.Namespace(host="http://127.0.0.1:8000", users=5, spawn_rate=5.0, duration=10)
    page = write_page(tmp_path, summary, args, ok=False).read_text()
    assert "Failed: 1 tasks failed or timed out; the queue depth was never read." in page
    for name in summary["plots"]:
        assert f'<img src="{name}"' in page
    assert "<tr><th>submitted (202)</th><td>200</td></tr>" in page
    assert "&lt;sleep&gt;" in page and "<sleep>" not in page, "names are escaped"
    assert "No queue-depth plot" in page
    assert 'href="locust.html"' in page
