"""Pending approvals: decisions waiting for an operator when APPROVAL=manual, with
the time left before each expires to REVERT and, beside the reasons, what the
coach advised. Approve or override: one key, then a confirmation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from smart_tui.approvals import PendingDecision
from smart_tui.tui.charts import format_duration
from smart_tui.tui.format import when
from smart_tui.tui.screens.base import DatabaseScreen
from smart_tui.tui.widgets.key_bar import KeyBar
from smart_tui.tui.widgets.status_line import StatusLine

if TYPE_CHECKING:
    from smart_tui.coach.records import StoredAdvice


class ApprovalsScreen(DatabaseScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "approve", "Approve"),
        Binding("o", "override", "Override"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.items: list[PendingDecision] = []
        self.advice: dict[str, StoredAdvice] = {}

    def compose(self) -> ComposeResult:
        yield StatusLine("Pending approvals")
        yield DataTable(id="pending", cursor_type="row")
        yield Static("", id="pending-reasons", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(
            "decided", "experiment", "variant", "decision", "expires in"
        )
        self.follow_database()

    def reload(self) -> None:
        self.items = self.smart.pending_decisions()
        self.advice = self.smart.advice_for(item.run_id for item in self.items)
        timeout_s = self.smart.settings.approval_timeout_seconds
        now = self.smart.now()
        table = self.query_one(DataTable)
        table.clear()
        for item in self.items:
            left = max(timeout_s - item.age_s(now), 0)
            table.add_row(
                when(item.decided_at),
                item.experiment_id,
                item.variant,
                item.decision,
                format_duration(left),
                key=str(item.id),
            )
        self._show_reasons()

    def selected(self) -> PendingDecision | None:
        row = self.query_one(DataTable).cursor_row
        return self.items[row] if self.items and row < len(self.items) else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_reasons()

    def _show_reasons(self) -> None:
        item = self.selected()
        text = "nothing waits for an answer"
        if item is not None:
            advice = self.advice.get(item.run_id)
            # The coach before the reasons: the panel is short at 80x24.
            lines = [
                f"{item.run_id}: {item.decision} of {item.variant}",
                advice.summary() if advice else "coach: not asked",
                *(f"  - {reason}" for reason in item.reasons),
            ]
            text = "\n".join(lines)
        self.query_one("#pending-reasons", Static).update(text)

    def action_approve(self) -> None:
        item = self.selected()
        if item is not None:
            self.smart.answer_pending(item, override=False)

    def action_override(self) -> None:
        item = self.selected()
        if item is not None:
            self.smart.answer_pending(item, override=True)


def opposite(decision: str) -> str:
    """What overriding ``decision`` means: a KEEP becomes REVERT, anything else KEEP."""
    return "REVERT" if decision == "KEEP" else "KEEP"


def utc_now() -> datetime:
    return datetime.now(UTC)
