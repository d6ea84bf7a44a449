"""The static, read-only HTML dashboard that nginx serves.

``write_dashboard`` renders ``templates/dashboard.html.j2`` with jinja2 (autoescape on,
so experiment names and reasons are always shown as text) from the run record, and
replaces ``index.html`` atomically: readers see the old page or the new, never half."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from smart_tui import __version__
from smart_tui.storage import RunRow, Store, utc_now

HISTORY_ROWS = 30


@dataclass
class WindowView:
    """One measured window as the page shows it."""

    variant: str
    role: str
    summary: dict[str, Any]


@dataclass
class RunView:
    """A run with what the page needs to show about it."""

    run: RunRow
    windows: list[WindowView] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("smart_tui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _run_view(store: Store, run: RunRow) -> RunView:
    windows = [
        WindowView(variant=row["variant"], role=row["role"], summary=row["summary"])
        for row in store.windows(run.id)
        # A window still measuring (or cut short) has no summary yet.
        if row["summary"]
    ]
    return RunView(run=run, windows=windows, decisions=store.decisions(run.id))


def render_dashboard(store: Store, refresh_s: int = 30) -> str:
    """The page's HTML for the record as it is now."""
    runs = store.runs(limit=HISTORY_ROWS)
    latest = _run_view(store, runs[0]) if runs else None
    template = _environment().get_template("dashboard.html.j2")
    return template.render(
        latest=latest,
        history=[_run_view(store, run) for run in runs],
        generated_at=utc_now(),
        refresh_s=refresh_s,
        version=__version__,
    )


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # nginx workers run as another user: the page must be world-readable.
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_dashboard(store: Store, www_dir: Path) -> Path:
    """Render the dashboard and put it at ``www_dir/index.html``."""
    target = www_dir / "index.html"
    write_atomically(target, render_dashboard(store))
    return target
