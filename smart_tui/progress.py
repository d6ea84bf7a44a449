"""Showing a run's progress on the terminal, or as plain log lines without one.

On a terminal: a live bar per phase with time left and the latest second's numbers
(rich, which honours ``NO_COLOR``). Without one (systemd, a pipe): one plain line per
phase and one every ``PLAIN_EVERY_S`` seconds of measurement, no colour codes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from smart_tui.probe import SecondStats
from smart_tui.runner import Observer

log = logging.getLogger("smart_tui.progress")

PLAIN_EVERY_S = 10


def live_numbers(stats: SecondStats) -> str:
    """The second's figures in one short line."""
    p50 = f"{stats.p50_ms:.2f}" if stats.p50_ms is not None else "-"
    p99 = f"{stats.p99_ms:.2f}" if stats.p99_ms is not None else "-"
    return (
        f"{stats.achieved_rps:.0f}/{stats.intended:.0f} req/s  p50 {p50} ms  "
        f"p99 {p99} ms  5xx {stats.status_5xx}  conn err {stats.conn_errors}"
    )


class PlainObserver(Observer):
    """Log lines for journald or a pipe."""

    def phase(self, name: str, variant: str | None, duration_s: float) -> None:
        planned = f" for {duration_s:.0f} s" if duration_s else ""
        log.info("phase %s (%s)%s", name, variant or "-", planned)

    def second(self, role: str, variant: str, stats: SecondStats) -> None:
        if stats.second % PLAIN_EVERY_S == PLAIN_EVERY_S - 1:
            log.info(
                "%s %s t=%ds %s", role, variant, stats.second + 1, live_numbers(stats)
            )

    def decided(self, variant: str, decision: str, reasons: list[str]) -> None:
        log.info("decision for %s: %s", variant, decision)


class TerminalObserver(Observer):
    """A live progress bar with the latest numbers."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def phase(self, name: str, variant: str | None, duration_s: float) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)
        self.task = self.progress.add_task(
            f"{name} {variant or ''}".strip(), total=duration_s or None, numbers=""
        )

    def second(self, role: str, variant: str, stats: SecondStats) -> None:
        if self.task is not None:
            self.progress.update(
                self.task, completed=stats.second + 1, numbers=live_numbers(stats)
            )

    def decided(self, variant: str, decision: str, reasons: list[str]) -> None:
        self.progress.console.print(f"[bold]{variant}: {decision}[/]")
        for reason in reasons:
            self.progress.console.print(f"  {reason}", markup=False, highlight=False)


@contextmanager
def make_observer(stream: TextIO) -> Iterator[Observer]:
    """The right observer for ``stream``: live bars on a terminal, lines otherwise."""
    if not stream.isatty():
        yield PlainObserver()
        return

    console = Console(file=stream)
    progress = Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[numbers]}"),
        console=console,
        refresh_per_second=4,
    )
    # Route log lines above the live bars instead of through them.
    root = logging.getLogger("smart_tui")
    saved = root.handlers[:]
    root.handlers[:] = [RichHandler(console=console, show_path=False)]
    try:
        with progress:
            yield TerminalObserver(progress)
    finally:
        root.handlers[:] = saved
