"""The static, read-only HTML dashboard that nginx serves.

``write_dashboard`` renders ``templates/dashboard.html.j2`` with jinja2 (autoescape on,
so experiment names and reasons are always shown as text) from the run record, and
replaces ``index.html`` atomically: readers see the old page or the new, never half."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from smart_tui import __version__, trends
from smart_tui.atomic import write_atomically
from smart_tui.coach.records import StoredAdvice, advice_for_runs
from smart_tui.storage import RunRow, Store, utc_now

HISTORY_ROWS = 30
# Inline SVG trend charts: size in CSS pixels (they scale down on narrow screens).
CHART_W, CHART_H = 320, 90


@dataclass
class WindowView:
    """One measured window as the page shows it."""

    variant: str
    role: str
    summary: dict[str, Any]


@dataclass
class RunView:
    """A run with what the page needs to show about it."""

    run: RunRow
    windows: list[WindowView] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    advice: StoredAdvice | None = None


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("smart_tui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _run_view(store: Store, run: RunRow, advice: StoredAdvice | None) -> RunView:
    windows = [
        WindowView(variant=row["variant"], role=row["role"], summary=row["summary"])
        for row in store.windows(run.id)
        # A window still measuring (or cut short) has no summary yet.
        if row["summary"]
    ]
    return RunView(
        run=run, windows=windows, decisions=store.decisions(run.id), advice=advice
    )


@dataclass
class TrendChart:
    """One experiment's baseline over time, as SVG path data and captions."""

    experiment_id: str
    runs: int
    latest: trends.TrendPoint
    top_ms: float
    top_pct: float
    p50_path: str
    p95_path: str
    error_path: str
    worse: list[str]


def _trend_charts(store: Store) -> list[TrendChart]:
    charts = []
    for experiment_id, points in trends.read_series(store).items():
        p50 = [point.p50_ms for point in points]
        p95 = [point.p95_ms for point in points]
        errors = [point.error_pct for point in points]
        top_ms = trends.y_top([p50, p95])
        top_pct = trends.y_top([errors, [1.0]])  # 0-1 % at least: no zoomed noise

        def path(values: list[float | None], top: float, height: int) -> str:
            segments = trends.scale_points(
                values, width=CHART_W, height=height, top=top
            )
            return trends.svg_path(segments)

        charts.append(
            TrendChart(
                experiment_id=experiment_id,
                runs=len(points),
                latest=points[-1],
                top_ms=top_ms,
                top_pct=top_pct,
                p50_path=path(p50, top_ms, CHART_H),
                p95_path=path(p95, top_ms, CHART_H),
                error_path=path(errors, top_pct, CHART_H // 2),
                worse=[worse.describe() for worse in trends.regressions(points)],
            )
        )
    return charts


def render_dashboard(store: Store, refresh_s: int = 30) -> str:
    """The page's HTML for the record as it is now."""
    runs = store.runs(limit=HISTORY_ROWS)
    advice = advice_for_runs(store, [run.id for run in runs])
    history = [_run_view(store, run, advice.get(run.id)) for run in runs]
    template = _environment().get_template("dashboard.html.j2")
    return template.render(
        latest=history[0] if history else None,
        history=history,
        trends=_trend_charts(store),
        chart_w=CHART_W,
        chart_h=CHART_H,
        generated_at=utc_now(),
        refresh_s=refresh_s,
        version=__version__,
    )


def write_dashboard(store: Store, www_dir: Path) -> Path:
    """Render the dashboard and put it at ``www_dir/index.html``."""
    target = www_dir / "index.html"
    write_atomically(target, render_dashboard(store))
    return target
