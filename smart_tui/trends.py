"""The baseline over time: one point a run (p50, p95, 5xx share), per experiment, and
whether the newest baseline got worse than its recent history.

Series are per experiment because each experiment measures its own URL. Everything
here but ``read_series`` is a pure function over plain values, so the dashboard's
SVG, the app's plotext charts and the metrics file share one tested computation."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

from smart_tui.storage import Store

METRICS = ("p50_ms", "p95_ms", "error_pct")
# Recent history a new baseline is compared with, and how much of it is needed.
HISTORY_RUNS = 10
MIN_HISTORY = 3
# Worse means: above every one of the recent runs AND this far above their median,
# so ordinary run-to-run noise never raises the flag.
WORSE_PCT = 25.0
# Floors below which a difference is noise whatever the ratio (loopback latencies
# are fractions of a millisecond; one 5xx in a short window is a small share).
WORSE_FLOOR = {"p50_ms": 0.5, "p95_ms": 1.0, "error_pct": 0.5}


@dataclass(frozen=True)
class TrendPoint:
    """The baseline window of one run."""

    run_id: str
    started_at: str
    p50_ms: float | None
    p95_ms: float | None
    error_pct: float | None

    def value(self, metric: str) -> float | None:
        number = getattr(self, metric)
        return float(number) if number is not None else None


@dataclass(frozen=True)
class Worse:
    """The newest baseline is worse than its recent history on ``metric``."""

    metric: str
    latest: float
    typical: float  # the median of the recent history
    history_runs: int

    def describe(self) -> str:
        unit = "%" if self.metric == "error_pct" else " ms"
        name = {"p50_ms": "p50", "p95_ms": "p95", "error_pct": "5xx"}[self.metric]
        return (
            f"baseline {name} {self.latest:.2f}{unit} is worse than each of the last "
            f"{self.history_runs} runs (median {self.typical:.2f}{unit})"
        )


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def point_from_summary(
    run_id: str, started_at: str, summary: Mapping[str, Any]
) -> TrendPoint:
    """A point from a stored window summary (missing or NaN figures become None)."""
    return TrendPoint(
        run_id=run_id,
        started_at=started_at,
        p50_ms=_number(summary.get("p50_ms")),
        p95_ms=_number(summary.get("p95_ms")),
        error_pct=_number(summary.get("error_pct")),
    )


def read_series(store: Store, limit: int = 60) -> dict[str, list[TrendPoint]]:
    """experiment id -> its last ``limit`` baselines, oldest first (one per run)."""
    cursor = store.db.execute(
        "select r.experiment_id, r.id, r.started_at, w.summary from runs r "
        "join windows w on w.run_id = r.id and w.role = 'baseline' "
        "and w.id = (select min(id) from windows where run_id = r.id "
        "and role = 'baseline') order by r.started_at, r.rowid"
    )
    series: dict[str, list[TrendPoint]] = {}
    for experiment_id, run_id, started_at, summary in cursor:
        figures = json.loads(summary or "{}")
        if not figures:
            continue  # a window still being measured
        series.setdefault(experiment_id, []).append(
            point_from_summary(run_id, started_at, figures)
        )
    return {key: points[-limit:] for key, points in sorted(series.items())}


def worse_than_history(
    points: Sequence[TrendPoint],
    metric: str,
    *,
    history_runs: int = HISTORY_RUNS,
    min_history: int = MIN_HISTORY,
    worse_pct: float = WORSE_PCT,
) -> Worse | None:
    """Whether the newest point is worse than the recent ones on ``metric``."""
    if not points:
        return None
    latest = points[-1].value(metric)
    history = [
        value
        for point in points[-history_runs - 1 : -1]
        if (value := point.value(metric)) is not None
    ]
    if latest is None or len(history) < min_history:
        return None
    typical = median(history)
    bar = max(
        max(history),
        typical * (1 + worse_pct / 100),
        typical + WORSE_FLOOR.get(metric, 0.0),
    )
    if latest <= bar:
        return None
    return Worse(metric, latest, typical, len(history))


def regressions(points: Sequence[TrendPoint]) -> list[Worse]:
    """Every metric on which the newest baseline is worse than its history."""
    return [
        worse for metric in METRICS if (worse := worse_than_history(points, metric))
    ]


# --- chart maths (inline SVG on the dashboard) --------------------------------


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is >= ``value``."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10.0 * power


def y_top(series: Iterable[Sequence[float | None]]) -> float:
    """The top of a y axis starting at 0 that fits every value of every series."""
    values = [v for values in series for v in values if v is not None]
    return nice_ceiling(max(values, default=0.0))


def scale_points(
    values: Sequence[float | None],
    *,
    width: float,
    height: float,
    top: float,
    pad: float = 4.0,
) -> list[list[tuple[float, float]]]:
    """Plot coordinates (y grows downwards) of ``values`` spread evenly across
    ``width``; a None breaks the line, so the result is a list of segments."""
    count = len(values)
    if count == 0 or top <= 0:
        return []
    step = (width - 2 * pad) / (count - 1) if count > 1 else 0.0
    segments: list[list[tuple[float, float]]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        x = pad + index * step if count > 1 else width / 2
        clipped = min(max(value, 0.0), top)
        y = height - pad - (clipped / top) * (height - 2 * pad)
        segments[-1].append((round(x, 1), round(y, 1)))
    return [segment for segment in segments if segment]


def svg_path(segments: Sequence[Sequence[tuple[float, float]]]) -> str:
    """An SVG path ``d`` attribute: one ``M`` per segment, ``L`` between points; a
    lone point gets a zero-length line so a round line cap shows it as a dot."""
    parts = []
    for segment in segments:
        (x0, y0), rest = segment[0], segment[1:]
        parts.append(f"M{x0:g} {y0:g}")
        parts.extend(f"L{x:g} {y:g}" for x, y in rest or [(x0, y0)])
    return " ".join(parts)
