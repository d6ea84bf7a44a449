"""SVG snapshots of each screen at 80x24 and 120x40 over the seeded database, with
a fixed clock and a fixed workspace path so every pixel is reproducible. Update
with ``pytest tests/test_tui_snapshots.py --snapshot-update`` after a deliberate
change, and look at the report before committing."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from test_tui_seed import fixed_clock, seeded
from textual.pilot import Pilot

from smart_tui.tui import SmartApp, build_app
from smart_tui.tui.live_state import LiveState

# Paths show on screen (config, broken experiment), so they must not vary per run.
WORKSPACE = Path(tempfile.gettempdir()) / "smart-tui-snapshots" / "ws"
SIZES = [(80, 24), (120, 40)]


def app() -> SmartApp:
    return build_app(seeded(WORKSPACE), clock=fixed_clock)


def finished_run() -> LiveState:
    state = LiveState(experiment_id="002_proxy_cache", source="app")
    state.begin_phase("measure", "on", 3.0, 0.0)
    for second in range(8):
        base = {"p50_ms": 20.0 + second % 3, "p99_ms": 60.0 + second % 4}
        base |= {"intended": 100, "achieved_rps": 100.0, "sent": 100}
        state.add_second("baseline", "baseline", base)
    for second in range(8):
        cached = {"p50_ms": 1.0 + second % 2, "p99_ms": 4.0 + second % 3}
        cached |= {"intended": 100, "achieved_rps": 99.0, "sent": 100}
        state.add_second("variant", "on", cached | {"status_5xx": 1})
    state.add_verdict("on", "KEEP", ["p50 -95% at 95%: clears 10%", "5xx within 2 pt"])
    state.end("KEEP, kept on")
    return state


async def show_finished_run(pilot: Pilot[Any]) -> None:
    assert isinstance(pilot.app, SmartApp)
    pilot.app.live = finished_run()
    await pilot.press("2")
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "keys",
    [
        [],
        ["enter"],
        ["3"],
        ["3", "enter"],
        ["4"],
        ["5", "down", "down", "down", "down", "down", "enter"],
        ["question_mark"],
    ],
    ids=[
        "experiments",
        "experiment-detail",
        "decisions",
        "run-detail",
        "approvals",
        "config-editing",
        "help",
    ],
)
def test_screen(snap_compare: Any, keys: list[str], size: tuple[int, int]) -> None:
    assert snap_compare(app(), press=keys, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_live_finished_run(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(app(), run_before=show_finished_run, terminal_size=size)
