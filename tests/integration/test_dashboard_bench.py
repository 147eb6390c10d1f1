"""bench/dashboard.py in the suite: the dashboard's pages stay fast on a big history.

At a smaller scale than the benchmark (20,000 recorded tasks, in a Redis of
this test's own, so the session's index stays small) and with a generous
bound, since the machine is shared: the real figures (100,000 tasks, under
100 ms) are in bench/README.md.  The figures line shows in CI's output.
"""

from __future__ import annotations

import pytest

from bench import dashboard
from bench.common import median, percentile
from testing.faults import report

pytestmark = pytest.mark.integration

TASKS, ROUNDS = 20_000, 5
GENEROUS_MS = 1000.0


def test_the_dashboards_pages_answer_quickly_over_a_big_history(broker_url, private_redis, tmp_path):
    results = dashboard.measure(broker_url, private_redis.url, TASKS, ROUNDS, tmp_path)
    shown = (f"{label} p50 {median(t):.1f} ms p95 {percentile(t, 0.95):.1f} ms" for label, t in results.items())
    report(f"[dashboard bench, {TASKS} tasks, in-process] " + "; ".join(shown))
    assert set(dashboard.PAGES) <= set(results)
    for label, times in results.items():
        assert max(times) < GENEROUS_MS, (label, times)
