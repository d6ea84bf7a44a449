"""The app running real experiments against the lab nginx: the Live screen fills
with per-second figures and the decision, and quitting mid-run (after the variant
was applied) puts nginx back on the baseline bytes before the app ends."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from smart_tui.config import load_settings
from smart_tui.lab import LabInfo
from smart_tui.settings import Settings
from smart_tui.tui import build_app
from smart_tui.tui.screens.confirm import ConfirmScreen
from smart_tui.tui.screens.live import LiveScreen

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(tmp_path: Path, lab: LabInfo) -> Settings:
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    conf = tmp_path / "smart.conf"
    conf.write_text("PROBE_RATE_RPS=150\n")
    short = {
        "BASELINE_SECONDS": "3",
        "EXPERIMENT_SECONDS": "3",
        "SETTLE_SECONDS": "1",
        "COOLDOWN_SECONDS": "0",
        "WARMUP_SECONDS": "0.5",
    }
    return load_settings(config_path=conf, overrides=short, environ={})


async def wait_for(
    pilot: Pilot[int], ready: Callable[[], bool], timeout_s: float = 30.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not ready():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await pilot.pause(0.1)


def run_rows(settings: Settings) -> list[tuple[str, str]]:
    with sqlite3.connect(settings.database_path) as conn:
        return conn.execute("select status, outcome from runs").fetchall()


async def test_live_run_shows_seconds_and_decision(settings, lab) -> None:
    baseline = lab.nginx_conf.read_bytes()
    app = build_app(settings)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("1", "down", "r")  # 002_proxy_cache
        assert isinstance(app.screen, LiveScreen)
        await wait_for(pilot, lambda: "baseline baseline" in app.live.seconds)
        await pilot.pause(0.3)
        assert "phase baseline" in str(app.screen.query_one("#live-phase").render())
        assert "req/s" in str(app.screen.query_one("#live-numbers").render())

        await wait_for(pilot, lambda: bool(app.live.ended))
        await pilot.pause(0.3)
        assert app.live.ended == "KEEP, kept cache_on"
        verdicts = str(app.screen.query_one("#live-verdicts").render())
        assert verdicts.startswith("cache_on: KEEP")
        chart = str(app.screen.query_one("#live-chart").render())
        assert "o baseline p50  x baseline p99" in chart
    assert lab.nginx_conf.read_bytes() != baseline  # the winner stays
    assert run_rows(settings) == [("done", "KEEP")]


async def test_quit_mid_run_returns_nginx_to_baseline(settings, lab) -> None:
    baseline = lab.nginx_conf.read_bytes()
    app = build_app(settings)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("1", "down", "r")
        await wait_for(pilot, lambda: app.live.phase in ("settle", "measure"))
        assert lab.nginx_conf.read_bytes() != baseline

        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.control is None)
    assert app.return_code == 0
    assert lab.nginx_conf.read_bytes() == baseline
    test = subprocess.run([*lab.nginx_cmd, "-t"], capture_output=True, check=False)
    assert test.returncode == 0
    assert run_rows(settings) == [("failed", "ABORTED")]


async def test_cancel_asks_then_reverts(settings, lab) -> None:
    baseline = lab.nginx_conf.read_bytes()
    app = build_app(settings)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("1", "down", "r")
        await wait_for(pilot, lambda: app.live.phase in ("settle", "measure"))
        await pilot.press("c", "n")
        assert app.control is not None and not app.control.stop.is_set()
        await pilot.press("c", "y")
        await wait_for(pilot, lambda: app.control is None)
        assert "cancelled" in app.live.ended
    assert lab.nginx_conf.read_bytes() == baseline
