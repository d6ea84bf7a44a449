"""Pure helpers behind the TUI, tested without Textual: chart bucketing and drawing,
durations, the live state's guardrail and a timer run rebuilt from the database."""

from __future__ import annotations

from pathlib import Path

from test_tui_seed import seeded

from smart_tui.storage import Store
from smart_tui.tui.charts import bucket, format_duration, latency_plot, sparkline
from smart_tui.tui.live_state import LiveState, from_database, planned_seconds


def test_bucket_keeps_each_buckets_peak() -> None:
    assert bucket([1, 9, 2, 3, None, None], 3) == [9, 3, None]
    assert bucket([1, 2], 5) == [1, 2]
    assert bucket([1, 2], 0) == []


def test_sparkline_marks_gaps_and_scales() -> None:
    assert sparkline([1, None, 9], 3) == "▁ █"
    assert sparkline([None, None], 4) == ""


def test_latency_plot_tells_series_apart_without_colour() -> None:
    text = latency_plot({"baseline p50": [10, 11, 12], "variant p50": [2, 3]}, 60, 12)
    assert "o baseline p50" in text and "x variant p50" in text
    assert "\x1b[" not in text
    assert latency_plot({"empty": [None]}, 60, 12).startswith("waiting")


def test_format_duration() -> None:
    assert [format_duration(s) for s in (5, 75, 3600 * 2 + 61)] == [
        "5s",
        "1m15s",
        "2h01m",
    ]


def test_guardrail_compares_variant_errors_with_baseline() -> None:
    state = LiveState(experiment_id="x", max_err_delta_pct=2.0)
    assert state.guardrail() == "guardrail: waiting for the baseline"
    state.add_second("baseline", "baseline", {"sent": 100, "status_5xx": 1})
    state.add_second("variant", "v", {"sent": 100, "status_5xx": 2})
    assert state.guardrail() == "guardrail ok: errors 2.00% (limit 3.00%)"
    state.add_second("variant", "v", {"sent": 100, "conn_errors": 6})
    assert state.guardrail().startswith("guardrail BREACHED: errors 4.00%")


def test_planned_seconds_come_from_the_runs_settings() -> None:
    shown = {"BASELINE_SECONDS": "300", "WARMUP_SECONDS": "1", "SETTLE_SECONDS": "5"}
    assert planned_seconds(shown, "baseline") == 301
    assert planned_seconds(shown, "settle") == 5
    assert planned_seconds(shown, "apply") == 0


def test_timer_run_rebuilt_from_the_database(tmp_path: Path) -> None:
    settings = seeded(tmp_path / "ws")
    store = Store(settings.database_path)
    try:
        run = store.run("r2")
        assert run is not None
        state = from_database(store, run)
    finally:
        store.close()
    assert state.source == "timer" and state.ended == "INCONCLUSIVE"
    assert sorted(state.seconds) == ["baseline baseline", "variant max", "variant mid"]
    assert [v.decision for v in state.verdicts] == ["REVERT", "INCONCLUSIVE"]
    assert len(state.chart_series()["variant max p99"]) == 8
