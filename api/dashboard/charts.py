"""The throughput chart as inline SVG, computed on the server: no chart library in the browser."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from workqueue.throughput import Minute

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28
SERIES = (("submitted", "Submitted"), ("succeeded", "Succeeded"), ("failed", "Failed"))


@dataclass
class Chart:
    width: int
    height: int
    lines: list[dict[str, Any]]
    y_ticks: list[dict[str, Any]]
    x_ticks: list[dict[str, Any]]
    columns: list[dict[str, Any]]
    totals: dict[str, int]
    plot: dict[str, int]


TICKS = 4


def nice_ceiling(value: int) -> int:
    """The top of the y axis: ``TICKS`` steps of 1, 2 or 5 x 10^n, at or above ``value``."""
    power = 1
    while True:
        for factor in (1, 2, 5):
            if TICKS * factor * power >= value:
                return TICKS * factor * power
        power *= 10


def throughput(series: list[Minute]) -> Chart:
    """Lines of tasks per minute (submitted, succeeded, failed), with a tooltip column per minute."""
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = {key: [getattr(m, key) for m in series] for key, _ in SERIES}
    top = nice_ceiling(max((v for row in values.values() for v in row), default=0))
    count = max(len(series), 2)

    def x(at: int) -> float:
        return LEFT + inner_w * at / (count - 1)

    def y(value: int) -> float:
        return TOP + inner_h * (1 - value / top)

    lines = [
        {
            "key": key,
            "label": label,
            "points": " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in enumerate(values[key])),
        }
        for key, label in SERIES
    ]
    y_ticks = [{"y": round(y(top * i // TICKS), 1), "label": top * i // TICKS} for i in range(TICKS + 1)]
    x_ticks = []
    for at in range(0, len(series), 15):
        x_ticks.append({"x": round(x(at), 1), "label": _hhmm(series[at].start)})
    if series:
        x_ticks.append({"x": round(x(len(series) - 1), 1), "label": "now"})
    step = inner_w / (count - 1)
    columns = [
        {
            "x": round(x(at) - step / 2, 1),
            "width": round(step, 1),
            "title": f"{_hhmm(m.start)} UTC: {m.submitted} submitted, {m.succeeded} succeeded, {m.failed} failed",
        }
        for at, m in enumerate(series)
    ]
    totals = {key: sum(values[key]) for key, _ in SERIES}
    plot = {"left": LEFT, "top": TOP, "right": WIDTH - RIGHT, "bottom": HEIGHT - BOTTOM}
    return Chart(WIDTH, HEIGHT, lines, y_ticks, x_ticks, columns, totals, plot)


def _hhmm(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%M")
