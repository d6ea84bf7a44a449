"""Decisions: past runs and what was decided, filtered by experiment and outcome,
sorted by time either way; Enter opens the run's reasons, numbers and log."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Select

from smart_tui.tui.format import when
from smart_tui.tui.model import DecisionRow
from smart_tui.tui.screens.base import DatabaseScreen
from smart_tui.tui.widgets.key_bar import KeyBar
from smart_tui.tui.widgets.status_line import StatusLine


class DecisionsScreen(DatabaseScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open_run", "Detail"),
        # Short words for the footer at 80 columns; the help screen and the
        # command palette show the tooltips.
        Binding("s", "toggle_sort", "Sort", tooltip="Sort by time"),
        Binding(
            "x",
            "focus_filter('#filter-experiment')",
            "Experiment",
            tooltip="Filter by experiment",
        ),
        Binding(
            "o",
            "focus_filter('#filter-outcome')",
            "Outcome",
            tooltip="Filter by outcome",
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.newest_first = True
        self.rows: list[DecisionRow] = []

    def compose(self) -> ComposeResult:
        yield StatusLine("Decisions")
        with Horizontal(id="decision-filters"):
            yield Select[str]([], prompt="all experiments", id="filter-experiment")
            yield Select[str]([], prompt="all outcomes", id="filter-outcome")
        yield DataTable(id="decisions", cursor_type="row", zebra_stripes=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(
            "started", "experiment", "outcome", "kept", "decisions"
        )
        self.follow_database()
        self.query_one(DataTable).focus()

    def _filter(self, selector: str) -> str | None:
        value = self.query_one(selector, Select).value
        return value if isinstance(value, str) else None

    def reload(self) -> None:
        experiment_filter = self.query_one("#filter-experiment", Select)
        outcome_filter = self.query_one("#filter-outcome", Select)
        experiments, outcomes = self.smart.decision_filters()
        # set_options clears the choice, so only when the choices changed.
        if [str(o) for o in experiments] != getattr(self, "_experiments", None):
            self._experiments = list(experiments)
            experiment_filter.set_options((name, name) for name in experiments)
        if list(outcomes) != getattr(self, "_outcomes", None):
            self._outcomes = list(outcomes)
            outcome_filter.set_options((name, name) for name in outcomes)
        self._fill()

    def _fill(self) -> None:
        rows = self.smart.decision_rows(
            experiment_id=self._filter("#filter-experiment"),
            outcome=self._filter("#filter-outcome"),
            newest_first=self.newest_first,
        )
        table = self.query_one(DataTable)
        if rows == self.rows and table.row_count:
            return  # the usual case during a run: nothing to redraw
        self.rows = rows
        table.clear()
        for row in self.rows:
            table.add_row(
                when(row.started_at),
                row.experiment_id,
                row.outcome,
                row.kept_variant,
                row.decisions or "-",
                key=row.run_id,
            )

    def on_select_changed(self, event: Select.Changed) -> None:
        self._fill()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.smart.open_run(event.row_key.value)

    def action_open_run(self) -> None:
        table = self.query_one(DataTable)
        if self.rows and table.cursor_row < len(self.rows):
            self.smart.open_run(self.rows[table.cursor_row].run_id)

    def action_toggle_sort(self) -> None:
        self.newest_first = not self.newest_first
        self.notify("newest first" if self.newest_first else "oldest first")
        self._fill()

    def action_focus_filter(self, selector: str) -> None:
        self.query_one(selector, Select).focus()
