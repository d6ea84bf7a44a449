"""Pure helpers behind the TUI, tested without running an app: chart bucketing and
drawing, durations, the live state's guardrail, a timer run rebuilt from the
database, the decisions page, the experiments' change signature and the key line."""

from __future__ import annotations

import os
from pathlib import Path

from test_tui_seed import seeded
from textual.binding import ActiveBinding, Binding

from smart_tui.storage import Store
from smart_tui.tui.charts import bucket, format_duration, latency_plot, sparkline
from smart_tui.tui.live_state import LiveState, from_database, planned_seconds
from smart_tui.tui.model import decision_rows, folder_signature
from smart_tui.tui.widgets.key_bar import key_line


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
    series = state.chart_series()
    assert sorted(series)[:2] == ["baseline p50", "baseline p99"]
    assert len(series["max p99"]) == 8


def test_key_line_groups_keys_and_reads_without_colour() -> None:
    screens = Binding.Group("screens", compact=True)
    active = [
        ActiveBinding(None, Binding("r", "run", "Run now"), True),
        ActiveBinding(None, Binding("x", "gone", "Hidden", show=False), True),
        ActiveBinding(None, Binding("1", "one", "One", group=screens), True),
        ActiveBinding(None, Binding("2", "two", "Two", group=screens), True),
        ActiveBinding(None, Binding("c", "cancel", "Cancel"), False),
        ActiveBinding(None, Binding("ctrl+c", "cancel", "Cancel"), True),
    ]
    line = key_line(active, lambda binding: binding.key, "^p palette")
    assert line.plain == "r Run now  12 screens  c Cancel  ^p palette"
    styles = {line.plain[span.start : span.end]: str(span.style) for span in line.spans}
    assert styles["r"] == "bold" and styles["c"] == "dim"


def test_decision_rows_page_and_their_decisions(tmp_path: Path) -> None:
    settings = seeded(tmp_path / "ws")
    store = Store(settings.database_path)
    try:
        rows = decision_rows(store, newest_first=False, limit=2)
        gzip = decision_rows(store, experiment_id="003_gzip", outcome="INCONCLUSIVE")
    finally:
        store.close()
    assert [row.run_id for row in rows] == ["r1", "r2"]
    assert rows[0].decisions == "auto KEEP (kept)"
    assert [row.run_id for row in gzip] == ["r2"]
    assert gzip[0].decisions == "max REVERT (reverted); mid INCONCLUSIVE (reverted)"


def test_folder_signature_moves_when_an_experiment_changes(tmp_path: Path) -> None:
    settings = seeded(tmp_path / "ws")
    before = folder_signature(settings.experiments_path)
    assert folder_signature(settings.experiments_path) == before
    meta = settings.experiments_path / "001_workers" / "meta.json"
    os.utime(meta, ns=(0, 0))  # ctime moves with any change, even of times
    assert folder_signature(settings.experiments_path) != before
    assert folder_signature(tmp_path / "missing") == ()


def test_live_numbers_skip_a_window_s_partial_last_second() -> None:
    state = LiveState(experiment_id="x")
    state.seconds["variant on"] = [
        {"second": 0, "intended": 150, "achieved_rps": 149.0},
        {"second": 1, "intended": 150, "achieved_rps": 151.0},
        {"second": 2, "intended": 12, "achieved_rps": 107.0},
    ]
    latest = state.latest()
    assert latest is not None and latest["second"] == 1

    state.seconds["variant on"].append({"second": 3, "intended": 150})
    latest = state.latest()
    assert latest is not None and latest["second"] == 3
