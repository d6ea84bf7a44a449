"""Experiments: every folder of ``experiments/`` with its status in words, its last
decision and when; run one now, open its detail, or enqueue it."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from smart_tui.tui.format import when
from smart_tui.tui.model import ExperimentRow
from smart_tui.tui.screens.base import DatabaseScreen
from smart_tui.tui.widgets.key_bar import KeyBar
from smart_tui.tui.widgets.status_line import StatusLine


class ExperimentsScreen(DatabaseScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run_selected", "Run now"),
        Binding("enter", "open_detail", "Detail"),
        Binding("e", "enqueue_selected", "Enqueue"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[ExperimentRow] = []

    def compose(self) -> ComposeResult:
        yield StatusLine("Experiments")
        yield DataTable(id="experiments", cursor_type="row", zebra_stripes=True)
        yield Static("", id="experiment-about", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("experiment", "status", "last", "when", "variants")
        self.follow_database()

    def reload(self) -> None:
        rows = self.smart.experiment_rows()
        table = self.query_one(DataTable)
        if rows == self.rows and table.row_count:
            return  # the usual case during a run: nothing to redraw
        selected = self.selected()
        self.rows = rows
        table.clear()
        for row in self.rows:
            table.add_row(
                row.id,
                row.status,
                row.last_outcome,
                when(row.last_when),
                row.variants or row.error_brief,
                key=row.id,
            )
        if selected is not None and selected.id in {row.id for row in self.rows}:
            table.move_cursor(row=table.get_row_index(selected.id))
        self._show_about()

    def selected(self) -> ExperimentRow | None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_about()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_detail()

    def _show_about(self) -> None:
        row = self.selected()
        about = self.query_one("#experiment-about", Static)
        if row is None:
            about.update(f"no experiments in {self.smart.settings.experiments_path}")
        elif row.error:
            about.update(f"BROKEN: {row.error}")
        else:
            about.update(f"{row.id}: {row.description or '(no description)'}")

    def action_run_selected(self) -> None:
        row = self.selected()
        if row is not None:
            self.smart.start_run(row.id)

    def action_enqueue_selected(self) -> None:
        row = self.selected()
        if row is not None:
            self.smart.enqueue(row.id)

    def action_open_detail(self) -> None:
        row = self.selected()
        if row is not None:
            self.smart.open_experiment(row.id)
