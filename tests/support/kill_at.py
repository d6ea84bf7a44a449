"""Run ``smart-tui`` and SIGKILL it at one named point of the run cycle.

Usage: ``python -m tests.support.kill_at POINT -- <smart-tui arguments>``. The test
wraps one core function so the process dies exactly there, the way a power cut or
the OOM killer would; nothing in the product knows about it."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from smart_tui import (
    cli,
    dashboard,
    hands,
    journal,
    measuring,
    progress,
    runner,
    storage,
)


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def after(call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        call(*args, **kwargs)
        die()

    return wrapped


def before(call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        die()

    return wrapped


def at_variant_second(predicate: Callable[[Any], bool]) -> None:
    """Die inside the variant window, at the first second matching ``predicate``."""
    original = progress.PlainObserver.second

    def second(self: Any, role: str, variant: str, stats: Any) -> None:
        original(self, role, variant, stats)
        if role == "variant" and predicate(stats):
            die()

    progress.PlainObserver.second = second  # type: ignore[method-assign]


def in_database_write() -> None:
    """Die with a write transaction open on the database."""

    def close_window(self: storage.Store, window_id: int, *args: Any) -> None:
        self.db.conn.execute("BEGIN IMMEDIATE")
        self.db.conn.execute(
            "update windows set summary = ? where id = ?", ["{half", window_id]
        )
        die()

    storage.Store.close_window = close_window  # type: ignore[method-assign]


def in_dashboard_write() -> None:
    """Die with the dashboard's temporary file half written."""

    def write(path: Any, text: str) -> None:
        partial = path.parent / f".{path.name}.partial"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text[: len(text) // 2])
        die()

    dashboard.write_atomically = write


def in_revert() -> None:
    original = hands.run_command

    def run_command(command: Any, **kwargs: Any) -> Any:
        if command == "./revert.sh":
            die()
        return original(command, **kwargs)

    hands.run_command = run_command


POINTS: dict[str, Callable[[], None]] = {
    "after-journal": lambda: setattr(
        journal.Journal, "write", after(journal.Journal.write)
    ),
    "after-apply": lambda: setattr(runner.Run, "apply", after(runner.Run.apply)),
    "mid-settle": lambda: at_variant_second(lambda stats: stats.warmup),
    "mid-measure": lambda: at_variant_second(
        lambda stats: not stats.warmup and stats.second >= 4
    ),
    "mid-decision": lambda: setattr(
        measuring.MeasuringRun, "judge", before(measuring.MeasuringRun.judge)
    ),
    "mid-revert": in_revert,
    "database-write": in_database_write,
    "dashboard-write": in_dashboard_write,
}


def main() -> int:
    point, separator, *arguments = sys.argv[1:]
    assert separator == "--", "usage: kill_at POINT -- ARGS"
    POINTS[point]()
    return cli.main(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
