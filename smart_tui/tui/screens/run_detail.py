"""One run: its decisions with reasons, what its coach advised, each window's
numbers, its phases and the tail of its run log."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from smart_tui.tui.format import ms, number, when
from smart_tui.tui.model import RunRecord
from smart_tui.tui.widgets.key_bar import KeyBar
from smart_tui.tui.widgets.status_line import StatusLine


def describe_run(record: RunRecord) -> str:
    run = record.run
    lines = [
        f"run        {run.id}",
        f"experiment {run.experiment_id}   trigger {run.trigger or '-'}",
        f"started    {when(run.started_at)}   finished {when(run.finished_at)}",
        f"outcome    {run.outcome or run.status}   kept {run.kept_variant or '-'}",
    ]
    if run.error:
        lines.append(f"error      {run.error}")
    lines += ["", "Decisions"]
    for decision in record.decisions:
        lines.append(
            f"  {decision['variant']}: {decision['decision']} "
            f"({decision['acted']}, {decision['policy']})"
        )
        lines += [f"    - {reason}" for reason in decision["reasons"]]
    if not record.decisions:
        lines.append("  none")
    lines += ["", "Coach", f"  {coach_text(record)}"]
    lines += ["", "Windows (role variant: p50, p99, errors, achieved/intended req/s)"]
    for window in record.windows:
        summary = window["summary"]
        lines.append(
            f"  {window['role']} {window['variant']}: {ms(summary.get('p50_ms'))}, "
            f"{ms(summary.get('p99_ms'))}, {number(summary.get('error_pct'), 2)}%, "
            f"{number(summary.get('achieved_rps'))}/"
            f"{number(summary.get('intended_rps'))}"
        )
    lines += ["", "Phases"]
    lines += [
        f"  {when(phase['started_at'])} {phase['name']} {phase['variant'] or ''} "
        f"{phase['status']} {phase['detail'] or ''}".rstrip()
        for phase in record.phases
    ]
    lines += ["", "Run log (last lines)"]
    lines += [f"  {line}" for line in record.log_tail] or ["  (no run.log)"]
    return "\n".join(lines)


def coach_text(record: RunRecord) -> str:
    advice = record.advice
    if advice is None:
        return "not asked"
    recommends = (
        f", recommends {advice.recommendation}"
        if advice.recommendation not in ("", "none")
        else ""
    )
    return (
        f"{advice.summary()} ({advice.source}, asked {when(advice.asked_at)}, "
        f"answered in {advice.elapsed_ms} ms{recommends})"
    )


class RunDetailScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back")
    ]

    def __init__(self, record: RunRecord) -> None:
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        yield StatusLine(f"Run {self.record.run.id}")
        with VerticalScroll(id="run-text"):
            yield Static(describe_run(self.record), markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#run-text").focus()
