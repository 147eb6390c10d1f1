"""What the dashboard computes for its pages: queue-wait quantiles from buckets, the throughput chart, its filters."""

from __future__ import annotations

import pytest

from api.dashboard import charts, views
from workqueue import throughput
from workqueue.throughput import WAIT_BOUNDS, Minute


def test_quantiles_from_buckets():
    counts = [0] * (len(throughput.WAIT_BOUNDS) + 1)
    assert throughput.quantile(0.5, counts) is None
    counts[throughput.WAIT_BOUNDS.index(0.1)] = 10  # ten waits in (0.05, 0.1]
    assert throughput.quantile(0.5, counts) == pytest.approx(0.075)
    counts[-1] = 90  # ninety beyond the last bound
    assert throughput.quantile(0.95, counts) == throughput.WAIT_BOUNDS[-1]
    assert throughput.wait_field("celery", 0.07) == f"wait:celery:{throughput.WAIT_BOUNDS.index(0.1)}"


@pytest.mark.parametrize(("seconds", "bucket"), [(0, 0), (0.005, 0), (0.0051, 1), (1800, 12), (1801, 13), (1e9, 13)])
def test_a_wait_is_counted_in_the_bucket_whose_bound_it_does_not_pass(seconds, bucket):
    assert throughput.wait_field("slow", seconds) == f"wait:slow:{bucket}"
    assert bucket == len(WAIT_BOUNDS) or seconds <= WAIT_BOUNDS[bucket]


def test_final_states_and_waits_are_counted_and_nothing_else():
    assert throughput.fields_for("SUCCESS") == ["SUCCESS"]
    assert throughput.fields_for("STARTED", "celery", 0.2) == ["wait:celery:4"]
    assert throughput.fields_for("PROGRESS") == [] and throughput.fields_for("FAILURE", None, 0.2) == ["FAILURE"]


@pytest.mark.parametrize(("value", "top"), [(0, 4), (3, 4), (4, 4), (5, 8), (9, 20), (21, 40), (41, 80), (1001, 2000)])
def test_the_y_axis_ends_at_four_nice_steps_above_the_highest_point(value, top):
    assert charts.nice_ceiling(value) == top


def test_the_chart_draws_a_point_per_minute_inside_its_frame_with_totals():
    minutes = [
        Minute(start=1_765_015_200 + 60 * i, submitted=i, counts={"SUCCESS": i // 2, "FAILURE": 1}) for i in range(60)
    ]
    chart = charts.throughput(minutes)
    assert chart.totals == {"submitted": sum(range(60)), "succeeded": sum(i // 2 for i in range(60)), "failed": 60}
    submitted = [tuple(map(float, p.split(","))) for p in chart.lines[0]["points"].split()]
    assert len(submitted) == 60
    assert submitted[0] == (charts.LEFT, charts.HEIGHT - charts.BOTTOM)  # 0 at the bottom left
    assert submitted[-1][0] == charts.WIDTH - charts.RIGHT and submitted[-1][1] > charts.TOP  # 59 below the top of 80
    assert [t["label"] for t in chart.y_ticks] == [0, 20, 40, 60, 80]
    assert [t["label"] for t in chart.x_ticks] == ["10:00", "10:15", "10:30", "10:45", "now"]
    assert chart.columns[1]["title"] == "10:01 UTC: 1 submitted, 0 succeeded, 1 failed"


def test_an_empty_hour_is_a_flat_chart():
    chart = charts.throughput([])
    assert chart.totals == {"submitted": 0, "succeeded": 0, "failed": 0} and chart.x_ticks == []


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2026-12-06T19:40:01.123456+00:00", "2026-12-06 19:40:01 UTC"),
        ("2026-12-06T20:40:01+01:00", "2026-12-06 19:40:01 UTC"),
        ("2026-12-06T19:40:01", "2026-12-06 19:40:01 UTC"),
        (1_765_050_001, "2025-12-06 19:40:01 UTC"),
        (None, "–"),
        ("", "–"),
        ("not a time", "not a time"),
        (10**20, str(10**20)),
    ],
)
def test_times_are_shown_in_utc_to_the_second(value, shown):
    assert views.when(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"), [(None, "–"), (0.0123, "12 ms"), (1.25, "1.2 s"), (119.9, "119.9 s"), (600, "10.0 min")]
)
def test_durations_are_shown_in_the_unit_that_reads_best(value, shown):
    assert views.seconds(value) == shown


@pytest.mark.parametrize(
    ("progress", "fraction"),
    [
        ({"elapsed": 1.5, "total": 3}, 0.5),
        ({"current": 3, "total": 4}, 0.75),
        ({"done": 10, "total": 4}, 1.0),
        ({"done": -1, "total": 4}, 0.0),
        ({"elapsed": 1, "total": 0}, None),
        ({"elapsed": "1", "total": 2}, None),
        ({"total": 2}, None),
        ("half", None),
        (None, None),
    ],
)
def test_a_progress_bar_fills_to_what_the_task_reported(progress, fraction):
    assert views.fraction(progress) == fraction
