"""Live: the run in progress, whether started here or by the timer: phase, time
left, latency per second, rate, 5xx and connection errors, the error guardrail and
the reasons of each decision as it forms. Redraws at most ``REDRAWS_PER_S`` times a
second whatever the data rate, so a slow SSH link keeps up."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import ProgressBar, Static

from smart_tui.tui.charts import format_duration, time_left_s
from smart_tui.tui.format import ms, number
from smart_tui.tui.live_state import LiveState
from smart_tui.tui.widgets.key_bar import KeyBar
from smart_tui.tui.widgets.latency_chart import LatencyChart
from smart_tui.tui.widgets.status_line import StatusLine

if TYPE_CHECKING:
    from smart_tui.tui.app import SmartApp

REDRAWS_PER_S = 4


def phase_text(state: LiveState, now: float) -> str:
    if not state.experiment_id:
        return "no run in progress; start one from Experiments (1, then r)"
    elapsed, planned = state.progress(now)
    left = (
        f"{format_duration(time_left_s(elapsed, planned))} left"
        if planned
        else format_duration(elapsed)
    )
    head = f"{state.experiment_id} ({state.source})"
    if state.ended:
        return f"{head}: ended: {state.ended}"
    return f"{head}: phase {state.phase or 'starting'} {state.variant}, {left}"


def numbers_text(state: LiveState) -> str:
    latest = state.latest()
    if latest is None:
        return "rate -  p50 -  p99 -  5xx -  conn errors -"
    return (
        f"rate {number(latest.get('achieved_rps'))}/{number(latest.get('intended'))}"
        f" req/s  p50 {ms(latest.get('p50_ms'))}  p99 {ms(latest.get('p99_ms'))}  "
        f"5xx {latest.get('status_5xx', 0)}  conn errors {latest.get('conn_errors', 0)}"
    )


def verdicts_text(state: LiveState) -> str:
    lines = []
    for verdict in state.verdicts:
        lines.append(f"{verdict.variant}: {verdict.decision}")
        lines += [f"  - {reason}" for reason in verdict.reasons]
    return "\n".join(lines) or "decision: not yet (needs the variant's window)"


class LiveScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "app.cancel_run", "Cancel run")
    ]

    def __init__(self) -> None:
        super().__init__()
        self._drawn: tuple[int, int] = (0, -1)

    @property
    def smart(self) -> SmartApp:
        return cast("SmartApp", self.app)

    def compose(self) -> ComposeResult:
        yield StatusLine("Live")
        yield Static("", id="live-phase", markup=False)
        yield ProgressBar(total=100, show_eta=False, id="live-progress")
        yield LatencyChart(id="live-chart")
        yield Static("", id="live-numbers", markup=False)
        yield Static("", id="live-guardrail", markup=False)
        yield Static("", id="live-verdicts", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        self.set_interval(1 / REDRAWS_PER_S, self.redraw)
        self.redraw()

    def redraw(self) -> None:
        state = self.smart.live
        now = time.time() if state.source == "timer" else time.monotonic()
        self.query_one("#live-phase", Static).update(phase_text(state, now))
        elapsed, planned = state.progress(now)
        bar = self.query_one(ProgressBar)
        if state.ended or not state.experiment_id:
            bar.update(total=100, progress=100 if state.ended else 0)
        elif planned:
            bar.update(total=planned, progress=min(elapsed, planned))
        else:
            bar.update(total=None)

        # The chart and texts only when the data moved: plotext is the costly part.
        drawn = (id(state), state.version)
        if drawn == self._drawn:
            return
        self._drawn = drawn
        self.query_one(LatencyChart).show(state.chart_series())
        self.query_one("#live-numbers", Static).update(numbers_text(state))
        self.query_one("#live-guardrail", Static).update(state.guardrail())
        self.query_one("#live-verdicts", Static).update(verdicts_text(state))
