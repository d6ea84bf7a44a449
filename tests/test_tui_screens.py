"""Pilot tests of every screen and key path at 80x24, over seeded data: navigation,
help, the command palette, experiment detail, enqueue, decisions filter/sort/detail,
approve, override, expiry, a start refused by the run lock, the config editor."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_tui_seed import add_run, fixed_clock, seeded, settings_for
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from smart_tui.lock import RunLock
from smart_tui.settings import Settings
from smart_tui.storage import Store
from smart_tui.tui import SmartApp, build_app
from smart_tui.tui.screens.approvals import ApprovalsScreen
from smart_tui.tui.screens.config_editor import ConfigScreen
from smart_tui.tui.screens.decisions import DecisionsScreen
from smart_tui.tui.screens.experiment_detail import ExperimentDetailScreen
from smart_tui.tui.screens.experiments import ExperimentsScreen
from smart_tui.tui.screens.help import HelpScreen
from smart_tui.tui.screens.live import LiveScreen
from smart_tui.tui.screens.run_detail import RunDetailScreen

SIZE = (80, 24)
pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return seeded(tmp_path / "ws")


def built(settings: Settings) -> SmartApp:
    """The app from the one factory, recording every notification it shows."""
    app = build_app(settings, clock=fixed_clock)
    shown: list[str] = []
    show = app.notify

    def notify(message: str, **options: Any) -> None:
        shown.append(message)
        show(message, **options)

    app.notify = notify  # type: ignore[method-assign]
    app.shown = shown  # type: ignore[attr-defined]
    return app


def notes(app: SmartApp) -> str:
    return "\n".join(app.shown)  # type: ignore[attr-defined]


def text_of(app: SmartApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def acted(settings: Settings) -> dict[str, str]:
    with sqlite3.connect(settings.database_path) as conn:
        rows = conn.execute("select run_id || ' ' || variant, acted from decisions")
        return dict(rows.fetchall())


async def wait_for(
    pilot: Pilot[int], ready: Callable[[], bool], timeout_s: float = 10.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not ready():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await pilot.pause(0.05)


async def test_navigation_reaches_every_screen_and_shows_pending(settings) -> None:
    app = built(settings)
    async with app.run_test(size=SIZE) as pilot:
        for key, screen in [
            ("2", LiveScreen),
            ("3", DecisionsScreen),
            ("4", ApprovalsScreen),
            ("5", ConfigScreen),
            ("1", ExperimentsScreen),
        ]:
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, screen)
            # r5 expired at start (older than 3600 s), r4 still waits.
            assert "pending approvals: 1" in text_of(app, "#status-line")

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = str(app.screen.query_one("#help-box Static", Static).render())
        assert "Approve" in help_text and "Cancel run" in help_text
        await pilot.press("escape")
        assert isinstance(app.screen, ExperimentsScreen)

        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_command_palette_lists_every_action(settings) -> None:
    app = built(settings)
    async with app.run_test(size=SIZE) as pilot:
        titles = {command.title for command in app.get_system_commands(app.screen)}
        for expected in [
            "Experiments: Run now",
            "Experiments: Enqueue",
            "Live: Cancel run",
            "Decisions: Sort by time",
            "Pending approvals: Approve",
            "Pending approvals: Override",
            "Config: Save",
            "Help",
            "Quit",
        ]:
            assert expected in titles
        await pilot.press("ctrl+p")
        await pilot.press(*"Sort by")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DecisionsScreen))
        await wait_for(pilot, lambda: "oldest first" in notes(app))


async def test_experiment_detail_enqueue_and_broken_run(settings) -> None:
    app = built(settings)
    async with app.run_test(size=SIZE) as pilot:
        about = text_of(app, "#experiment-about")
        assert about == "001_workers: More nginx workers"
        table = app.screen.query_one(DataTable)
        assert table.get_row("002_proxy_cache")[1] == "pending"

        await pilot.press("enter")
        assert isinstance(app.screen, ExperimentDetailScreen)
        detail = str(app.screen.query_one("#experiment-text Static", Static).render())
        assert '"description": "More nginx workers"' in detail
        assert "apply.sh:" in detail
        runs = app.screen.query_one(DataTable)
        assert runs.row_count == 2
        await pilot.press("enter")  # the newest run opens
        assert isinstance(app.screen, RunDetailScreen)
        assert "run        r3" in str(app.screen.query_one("#run-text Static").render())
        await pilot.press("escape", "escape")

        await pilot.press("e")
        await pilot.pause()
        assert "001_workers queued at position 1" in notes(app)
        assert table.get_row("001_workers")[1] == "queued"

        await pilot.press("down", "down", "down")
        assert "BROKEN" in text_of(app, "#experiment-about")
        await pilot.press("r")
        await pilot.pause()
        assert "refused:" in notes(app) and "malformed JSON" in notes(app)
        assert isinstance(app.screen, ExperimentsScreen)


async def test_decisions_filter_sort_and_detail(settings) -> None:
    app = built(settings)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        screen = app.screen
        assert isinstance(screen, DecisionsScreen)
        assert [row.run_id for row in screen.rows] == ["r4", "r5", "r3", "r2", "r1"]

        await pilot.press("s")
        assert [row.run_id for row in screen.rows] == ["r1", "r2", "r3", "r5", "r4"]
        await pilot.press("s")

        # Outcome filter by keyboard: INCONCLUSIVE, KEEP, PENDING, REVERT.
        await pilot.press("o", "enter", "down", "down", "enter")
        await pilot.pause()
        assert [row.outcome for row in screen.rows] == ["KEEP"]
        await pilot.press("x", "enter", "down", "down", "down", "enter")
        await pilot.pause()
        assert screen.rows == []  # 003_gzip never ended in KEEP

        screen.query_one("#filter-outcome").clear()  # type: ignore[attr-defined]
        await pilot.pause()
        assert [row.run_id for row in screen.rows] == ["r5", "r2"]

        screen.query_one(DataTable).focus()
        await pilot.press("down", "enter")
        assert isinstance(app.screen, RunDetailScreen)
        text = str(app.screen.query_one("#run-text Static").render())
        assert "max: REVERT (reverted, stats)" in text
        assert "- p99 did not fall enough" in text
        assert "baseline baseline: 20.00 ms, 60.00 ms, 0.00%, 100/100" in text
        assert "coach failed: timed out after 10 s (api, asked 2026-12-04" in text


async def test_expiry_override_and_lock_refusal(settings) -> None:
    app = built(settings)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert acted(settings)["r5 max"] == "expired-reverted"
        assert "expired to REVERT" in notes(app)

        await pilot.press("4")
        await pilot.pause()
        reasons = text_of(app, "#pending-reasons")
        assert "r4: KEEP of on\ncoach: agree: p50 fell 60%, no errors\n" in reasons
        await pilot.press("o")
        await pilot.pause()
        await pilot.press("n")  # the confirmation protects against a stray key
        assert acted(settings)["r4 on"] == "pending"
        await pilot.press("o", "y")
        await wait_for(pilot, lambda: acted(settings)["r4 on"] != "pending")
        assert acted(settings)["r4 on"] == "overridden-reverted"
        await wait_for(pilot, lambda: app.pending_count == 0)
        assert "nothing waits" in text_of(app, "#pending-reasons")

        with RunLock(settings.var_path / "run.lock", "a test holding the lock"):
            await pilot.press("1", "r")
            await wait_for(pilot, lambda: "holds the lock since" in notes(app))
        assert "a test holding the lock holds the lock since" in notes(app)
        assert app.control is None
        assert "locked" in app.live.ended


async def test_config_editor_refuses_then_saves_keeping_comments(settings) -> None:
    conf = settings.config_file
    assert conf is not None
    app = built(settings)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        table = app.screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index("BASELINE_SECONDS"))
        await pilot.press("enter")
        field = app.screen.query_one(Input)
        assert field.has_focus and field.value == "300"

        await pilot.press(*["backspace"] * 3, "-", "3", "enter")
        error = text_of(app, "#setting-error")
        assert error.startswith("refused: BASELINE_SECONDS='-3' is out of range")
        assert "300" in conf.read_text()

        await pilot.press(*["backspace"] * 2, "4", "2", "enter")
        assert "accepted" in text_of(app, "#setting-error")
        # The cursor stays on the edited row, so Down reaches the next key.
        assert table.cursor_row == table.get_row_index("BASELINE_SECONDS")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "saved BASELINE_SECONDS" in text_of(app, "#setting-error")
    text = conf.read_text()
    assert "BASELINE_SECONDS=42   # kept comment" in text
    assert text.startswith("# smart.conf for the TUI tests\n")
    assert "APPROVAL=manual        # a human answers" in text


async def test_hidden_screen_reloads_when_shown_again(settings) -> None:
    app = built(settings)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "1")
        decisions = app.get_screen_stack("decisions")[0]
        assert isinstance(decisions, DecisionsScreen)
        assert len(decisions.rows) == 5

        # Another process (the timer) records a run: only the shown screen reloads.
        other = Store(settings.database_path)
        add_run(
            other, "r6", "001_workers", "2026-12-04T11:50:00+00:00",
            [("auto", "KEEP", "kept")], outcome="KEEP", kept="auto",
        )  # fmt: skip
        other.close()
        app.poll()
        await pilot.pause()
        assert len(decisions.rows) == 5
        assert app.screen.rows[0].last_when == "2026-12-04T11:50:00+00:00"

        await pilot.press("3")
        await pilot.pause()
        assert [row.run_id for row in decisions.rows][:1] == ["r6"]


SECRETS = {
    "COACH_TOKEN": "tok-SECRET-1234",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/SECRET5678",
    "COACH_URL": "https://coach:pw-SECRET-9@coach.example/v1/advice",
}


def screen_text(app: SmartApp) -> str:
    table = app.screen.query_one(DataTable)
    cells = [
        str(cell) for row in range(table.row_count) for cell in table.get_row_at(row)
    ]
    return app.export_screenshot() + "\n".join(cells)


async def test_config_editor_never_shows_a_secret(tmp_path: Path) -> None:
    settings = seeded(tmp_path / "ws")
    conf = settings.config_file
    assert conf is not None
    conf.write_text(
        conf.read_text() + "COACH_TOKEN=tok-SECRET-0\n"
        "COACH_URL=https://coach:pw-SECRET-0@coach.example/v1/advice\n"
    )
    conf.chmod(0o600)
    app = built(settings_for(conf))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        field = app.screen.query_one(Input)
        assert "SECRET" not in screen_text(app)
        assert table.get_row("COACH_URL")[2] == "https://****@coach.example/v1/advice"

        # Each is typed hidden and from empty: a masked URL prefilled would save
        # "****" over the real credentials.
        for key, value in SECRETS.items():
            table.move_cursor(row=table.get_row_index(key))
            await pilot.press("enter")
            assert (field.password, field.value) == (True, "")
            field.value = value
            await pilot.press("enter")
            assert f"{key} accepted" in text_of(app, "#setting-error")
            assert table.get_row(key)[1] == "edited"
        await pilot.pause()
        assert "SECRET" not in screen_text(app)
        assert table.get_row("COACH_TOKEN")[2] == "****"
        assert table.get_row("COACH_URL")[2] == "https://****@coach.example/v1/advice"

        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "saved COACH_TOKEN, COACH_URL, SLACK_WEBHOOK_URL" in text_of(
            app, "#setting-error"
        )
        assert "SECRET" not in screen_text(app)
    text = conf.read_text()
    assert all(f"{key}={value}" in text for key, value in SECRETS.items())
