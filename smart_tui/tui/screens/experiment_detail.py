"""One experiment: its meta.json, its scripts and its past runs; a run opens the
run's detail."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Static

from smart_tui.experiments import BrokenExperiment, Experiment
from smart_tui.tui.format import when
from smart_tui.tui.model import scripts_of
from smart_tui.tui.widgets.key_bar import KeyBar
from smart_tui.tui.widgets.status_line import StatusLine

if TYPE_CHECKING:
    from smart_tui.tui.app import SmartApp

PAST_RUNS = 50


class ExperimentDetailScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "run", "Run now"),
        Binding("enter", "open_run", "Run detail", show=False),
    ]

    def __init__(self, entry: Experiment | BrokenExperiment) -> None:
        super().__init__()
        self.entry = entry

    @property
    def smart(self) -> SmartApp:
        return cast("SmartApp", self.app)

    def compose(self) -> ComposeResult:
        yield StatusLine(f"Experiment {self.entry.id}")
        with VerticalScroll(id="experiment-text"):
            yield Static(self._describe(), markup=False)
        yield DataTable(id="past-runs", cursor_type="row")
        yield KeyBar()

    def _describe(self) -> str:
        if isinstance(self.entry, BrokenExperiment):
            return f"{self.entry.path}\nBROKEN: {self.entry.error}"
        lines = [str(self.entry.path), "", "meta.json:"]
        lines += self.entry.meta.model_dump_json(indent=2).splitlines()
        for name, text in scripts_of(self.entry).items():
            lines += ["", f"{name}:", *text.rstrip().splitlines()]
        return "\n".join(lines)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("started", "outcome", "kept", "trigger", "run")
        for run in self.smart.store.runs(limit=PAST_RUNS, experiment_id=self.entry.id):
            table.add_row(
                when(run.started_at),
                run.outcome or run.status,
                run.kept_variant or "-",
                run.trigger or "-",
                run.id,
                key=run.id,
            )
        if not table.row_count:
            table.add_row("-", "never run", "", "", "")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.smart.open_run(event.row_key.value)

    def action_open_run(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            table.action_select_cursor()

    def action_run(self) -> None:
        self.smart.start_run(self.entry.id)
