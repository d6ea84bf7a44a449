"""``SmartApp``: the screens as modes, the state they share (settings, the store, the
live run, the pending count) and every action that touches the core. Threads only
post messages; the handlers here own the state. Build it with ``build_app``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from smart_tui import approvals
from smart_tui import queue as queue_mod
from smart_tui.config import (
    CONFIG_NAME,
    MASK,
    SettingRow,
    describe,
    load_settings,
    update_config_file,
)
from smart_tui.errors import ConfigError, ExperimentError, Interrupted, SmartError
from smart_tui.experiments import BrokenExperiment, Experiment, discover
from smart_tui.settings import Settings
from smart_tui.storage import Store
from smart_tui.tui import model
from smart_tui.tui.control import RunControl
from smart_tui.tui.live_state import LiveState, from_database
from smart_tui.tui.messages import (
    ApprovalDone,
    PhaseBegan,
    RunEnded,
    SecondMeasured,
    VariantDecided,
)
from smart_tui.tui.screens.approvals import ApprovalsScreen, opposite
from smart_tui.tui.screens.config_editor import ConfigScreen
from smart_tui.tui.screens.confirm import ConfirmScreen
from smart_tui.tui.screens.decisions import DecisionsScreen
from smart_tui.tui.screens.experiment_detail import ExperimentDetailScreen
from smart_tui.tui.screens.experiments import ExperimentsScreen
from smart_tui.tui.screens.help import HelpScreen
from smart_tui.tui.screens.live import LiveScreen
from smart_tui.tui.screens.run_detail import RunDetailScreen

if TYPE_CHECKING:
    from smart_tui.coach.records import StoredAdvice

Clock = Callable[[], datetime]

# The database is polled for the timer's runs, new decisions and expiries.
POLL_S = 1.0
SCREENS_BY_MODE: dict[str, tuple[str, type[Screen[None]]]] = {
    "experiments": ("Experiments", ExperimentsScreen),
    "live": ("Live", LiveScreen),
    "decisions": ("Decisions", DecisionsScreen),
    "approvals": ("Pending approvals", ApprovalsScreen),
    "config": ("Config", ConfigScreen),
}

# One footer entry for the five screen keys ("12345 screens"): with each named,
# the footer of every screen ran past 80 columns and hid Help and Quit. The help
# screen and the command palette still name each one.
SCREEN_KEYS = Binding.Group("screens", compact=True)


def utc_clock() -> datetime:
    return datetime.now(UTC)


class SmartApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "smart-tui"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[None]]]] = {
        mode: screen for mode, (_, screen) in SCREENS_BY_MODE.items()
    }
    DEFAULT_MODE = "experiments"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "switch_mode('experiments')", "Experiments", group=SCREEN_KEYS),
        Binding("2", "switch_mode('live')", "Live", group=SCREEN_KEYS),
        Binding("3", "switch_mode('decisions')", "Decisions", group=SCREEN_KEYS),
        Binding("4", "switch_mode('approvals')", "Approvals", group=SCREEN_KEYS),
        Binding("5", "switch_mode('config')", "Config", group=SCREEN_KEYS),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit_safely", "Quit"),
        Binding("ctrl+q", "quit_safely", "Quit", show=False, priority=True),
    ]

    pending_count = reactive(0)
    run_summary = reactive("idle")
    # Grows whenever the database changed; screens watch it to reload.
    db_generation = reactive(0)

    def __init__(self, settings: Settings, *, clock: Clock = utc_clock) -> None:
        super().__init__()
        self.settings = settings
        self.clock = clock
        self.store = Store(settings.database_path)
        self.live = LiveState(max_err_delta_pct=settings.max_err_delta_pct)
        self.control: RunControl | None = None
        self.entries: list[Experiment | BrokenExperiment] = []
        self._entries_signature: tuple[tuple[str, int, int], ...] | None = None
        # Only other connections' commits move data_version: the first poll then
        # finds nothing new, and the first screen is not loaded twice.
        self._data_version = self._database_version()
        self._quitting = False

    def now(self) -> datetime:
        return self.clock()

    # Lifecycle

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(POLL_S, self.poll)
        loop = asyncio.get_running_loop()
        # A dropped SSH session (SIGHUP) or a stop (SIGTERM) must revert a run too.
        for signum in (signal.SIGHUP, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._on_hangup)

    def _on_hangup(self) -> None:
        self.stop_run()
        self.exit(130)

    def on_unmount(self) -> None:
        self.stop_run()
        self.store.close()

    def stop_run(self) -> None:
        """Ask the app's run, if any, to revert and end (returns at once)."""
        if self.control is not None:
            self.control.stop.set()

    def poll(self) -> None:
        expired = approvals.expire(
            self.store, self.now(), self.settings.approval_timeout_seconds
        )
        if expired:
            self.notify(
                f"{len(expired)} pending decision(s) expired to REVERT; "
                "the server stays on baseline",
                severity="warning",
            )
        version = self._database_version()
        changed = self._entries_signature is not None and self._refresh_entries()
        if version != self._data_version or expired or changed:
            self._data_version = version
            self.db_generation += 1
        self.pending_count = approvals.pending_count(self.store)
        if self.control is None:
            self._follow_timer_run()

    def _database_version(self) -> int:
        return int(self.store.db.execute("PRAGMA data_version").fetchone()[0])

    def _follow_timer_run(self) -> None:
        running = model.running_runs(self.store)
        if running:
            self.live = from_database(self.store, running[0])
            self.run_summary = (
                f"{running[0].experiment_id} {self.live.phase} (timer)".strip()
            )
        elif self.live.source == "timer" and self.live.active:
            finished = self.store.run(self.live.run_id)
            if finished is not None:
                self.live = from_database(self.store, finished)
            self.run_summary = "idle"

    # Experiments

    def _refresh_entries(self) -> bool:
        """Read the experiments again if a folder or a meta.json changed (two
        stats each, not a parse and validation of every meta.json each poll)."""
        signature = model.folder_signature(self.settings.experiments_path)
        if signature == self._entries_signature:
            return False
        self._entries_signature = signature
        try:
            self.entries = discover(self.settings.experiments_path)
        except ExperimentError as exc:
            self.notify(exc.message, title=exc.title, severity="error")
            self.entries = []
        return True

    def experiment_rows(self) -> list[model.ExperimentRow]:
        self._refresh_entries()
        queued = frozenset(item.experiment_id for item in queue_mod.items(self.store))
        return model.experiment_rows(self.entries, self.store, queued=queued)

    def _entry(self, experiment_id: str) -> Experiment | BrokenExperiment | None:
        self._refresh_entries()
        return next((e for e in self.entries if e.id == experiment_id), None)

    def open_experiment(self, experiment_id: str) -> None:
        entry = self._entry(experiment_id)
        if entry is not None:
            self.push_screen(ExperimentDetailScreen(entry))

    def enqueue(self, experiment_id: str) -> None:
        entry = self._entry(experiment_id)
        if isinstance(entry, BrokenExperiment):
            self.notify(entry.error, title="not queued", severity="error")
            return
        item = queue_mod.add(self.store, experiment_id, reason="app")
        self.notify(
            f"{experiment_id} queued at position {item.position}; the timer's next "
            "run takes it"
        )
        self.db_generation += 1

    # Runs

    def start_run(self, experiment_id: str) -> None:
        if self.control is not None:
            self.notify(
                f"refused: {self.control.experiment_id} is running; wait or cancel it",
                severity="error",
            )
            return
        entry = self._entry(experiment_id)
        if isinstance(entry, BrokenExperiment):
            self.notify(f"refused: {entry.error}", severity="error")
            return
        if entry is None:
            self.notify(f"refused: no experiment {experiment_id}", severity="error")
            return
        self.control = RunControl(entry.id)
        self.live = LiveState(
            experiment_id=entry.id,
            source="app",
            max_err_delta_pct=self.settings.max_err_delta_pct,
        )
        self.run_summary = f"{entry.id} starting"
        self.switch_mode("live")
        self._run_worker(entry, self.control)

    @work(thread=True, exit_on_error=False, group="run")
    def _run_worker(self, experiment: Experiment, control: RunControl) -> None:
        # Imported here: the runner loads scipy (~1 s), which startup does not need.
        from smart_tui.tui.runs import run_from_app

        try:
            outcome = run_from_app(
                self.settings, experiment, control, self.post_message
            )
        except SmartError as exc:
            self.post_message(RunEnded(experiment.id, exc.title, exc.message))
            return
        kept = outcome.kept_variant or "baseline"
        self.post_message(RunEnded(experiment.id, f"{outcome.outcome}, kept {kept}"))

    def on_phase_began(self, message: PhaseBegan) -> None:
        self.live.begin_phase(
            message.name, message.variant, message.duration_s, time.monotonic()
        )
        self.run_summary = f"{self.live.experiment_id} {message.name} {message.variant}"

    def on_second_measured(self, message: SecondMeasured) -> None:
        self.live.add_second(message.role, message.variant, message.stats)

    def on_variant_decided(self, message: VariantDecided) -> None:
        self.live.add_verdict(message.variant, message.decision, message.reasons)

    def on_run_ended(self, message: RunEnded) -> None:
        self.control = None
        self.run_summary = "idle"
        if message.error is None:
            self.live.end(message.summary)
            self.notify(f"{message.experiment_id}: {message.summary}")
        else:
            self.live.end(f"{message.summary}: {message.error}")
            self.notify(
                f"{message.experiment_id}: {message.error}",
                title=message.summary,
                severity="warning" if message.summary == Interrupted.title else "error",
            )
        self.poll()
        if self._quitting:
            self.exit(0)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # The one place a worker's unexpected failure is reported.
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            if event.worker.group == "run":
                self.control = None
                self.run_summary = "idle"
                self.live.end(f"crashed: {event.worker.error!r}")
            self.notify(
                f"{event.worker.error!r}; see the run log",
                title="bug",
                severity="error",
            )

    def action_cancel_run(self) -> None:
        if self.control is None:
            timer = self.live.source == "timer" and self.live.active
            self.notify(
                "the timer's run belongs to another process; stop it there"
                if timer
                else "no run in progress",
                severity="warning",
            )
            return
        self.push_screen(
            ConfirmScreen(
                f"Cancel the run of {self.control.experiment_id}? "
                "nginx goes back to baseline."
            ),
            self._cancel_confirmed,
        )

    def _cancel_confirmed(self, yes: bool | None) -> None:
        if yes and self.control is not None:
            self.stop_run()
            self.run_summary = f"{self.control.experiment_id} cancelling"
            self.notify("cancelling: reverting to baseline…")

    def action_quit_safely(self) -> None:
        if self.control is None:
            self.exit(0)
            return
        self.push_screen(
            ConfirmScreen(
                f"A run of {self.control.experiment_id} is in progress. Quit? "
                "It is stopped and nginx goes back to baseline first."
            ),
            self._quit_confirmed,
        )

    def _quit_confirmed(self, yes: bool | None) -> None:
        if not yes:
            return
        if self.control is None:
            # The run ended while the question was open: nothing left to stop.
            self.exit(0)
            return
        self._quitting = True
        self._cancel_confirmed(True)

    # Approvals

    def pending_decisions(self) -> list[approvals.PendingDecision]:
        return approvals.pending(self.store)

    def answer_pending(
        self, item: approvals.PendingDecision, *, override: bool
    ) -> None:
        if override:
            to = opposite(item.decision)
            question = f"Override {item.decision} of {item.variant} with {to}?"
        else:
            to = item.decision
            question = f"Approve {item.decision} of {item.variant}?"
        if to == "KEEP":
            question += " The variant is applied to nginx now."
        else:
            question += " nginx stays on baseline."
        self.push_screen(
            ConfirmScreen(question),
            partial(self._answer_confirmed, item.id, to if override else None),
        )

    def _answer_confirmed(
        self, decision_id: int, override_to: str | None, yes: bool | None
    ) -> None:
        if yes:
            self.notify("working…")
            self._answer_worker(decision_id, override_to)

    @work(thread=True, exit_on_error=False, group="approval")
    def _answer_worker(self, decision_id: int, override_to: str | None) -> None:
        # A KEEP runs scripts and reloads nginx: never on the UI thread.
        store = Store(self.settings.database_path)
        try:
            if override_to is None:
                done = approvals.approve(self.settings, store, decision_id)
            else:
                done = approvals.override(
                    store, decision_id, override_to, settings=self.settings
                )
            self.post_message(ApprovalDone(done))
        except SmartError as exc:
            self.post_message(ApprovalDone(exc.title, exc.message))
        finally:
            store.close()

    def on_approval_done(self, message: ApprovalDone) -> None:
        if message.error is None:
            self.notify(message.summary)
        else:
            self.notify(message.error, title=message.summary, severity="error")
        self.poll()

    # Decisions

    def decision_rows(
        self, *, experiment_id: str | None, outcome: str | None, newest_first: bool
    ) -> list[model.DecisionRow]:
        return model.decision_rows(
            self.store,
            experiment_id=experiment_id,
            outcome=outcome,
            newest_first=newest_first,
        )

    def decision_filters(self) -> tuple[list[str], list[str]]:
        return model.experiment_ids(self.store), model.outcomes(self.store)

    def advice_for(self, run_ids: Iterable[str]) -> dict[str, StoredAdvice]:
        return model.advice_by_run(self.store, run_ids)

    def open_run(self, run_id: str) -> None:
        record = model.run_record(self.store, self.settings.var_path, run_id)
        if record is None:
            self.notify(f"no run {run_id}", severity="error")
            return
        self.push_screen(RunDetailScreen(record))

    # Config

    def setting_rows(self) -> list[SettingRow]:
        return describe(self.settings)

    def edited_values(self, changes: dict[str, str]) -> dict[str, str]:
        """How each changed key would be shown once saved: masked like the rest,
        so a token or a webhook URL typed in never appears on screen."""
        try:
            preview = load_settings(
                config_path=self.settings.config_file, overrides=changes, environ={}
            )
        except ConfigError:
            return dict.fromkeys(changes, MASK)
        return {
            row.key: row.value_shown for row in describe(preview) if row.key in changes
        }

    def config_target(self) -> str:
        path = self.settings.config_file or self.settings.base_dir / CONFIG_NAME
        return str(path)

    def check_setting(self, changes: dict[str, str]) -> str | None:
        """None if ``changes`` on top of the config file validate, else why not."""
        try:
            load_settings(
                config_path=self.settings.config_file, overrides=changes, environ={}
            )
        except ConfigError as exc:
            # "--set KEY: KEY='x' is ..." -> "KEY='x' is ...": no flag was given.
            return exc.message.partition(": ")[2] or exc.message
        return None

    def save_settings(self, changes: dict[str, str]) -> str | None:
        from pathlib import Path

        try:
            update_config_file(Path(self.config_target()), changes)
        except ConfigError as exc:
            return exc.message
        return None

    # Help and the command palette

    def action_help(self) -> None:
        screens = {title: screen for title, screen in SCREENS_BY_MODE.values()}
        self.push_screen(HelpScreen(list(self.BINDINGS), screens))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.show:
                yield SystemCommand(
                    binding.description,
                    f"key {binding.key_display or binding.key}",
                    partial(self.run_action, binding.action),
                )
        for mode, (title, screen_type) in SCREENS_BY_MODE.items():
            for binding in screen_type.BINDINGS:
                if isinstance(binding, Binding) and binding.description:
                    yield SystemCommand(
                        f"{title}: {binding.tooltip or binding.description}",
                        f"key {binding.key} on {title}",
                        partial(self._run_on_mode, mode, binding.action),
                    )

    async def _run_on_mode(self, mode: str, action: str) -> None:
        await self.switch_mode(mode)
        await self.run_action(action, self.screen)
