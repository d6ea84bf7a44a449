"""Short text forms shared by the screens: timestamps, numbers, outcomes."""

from __future__ import annotations

from datetime import datetime


def when(stamp: str | None) -> str:
    """``2026-12-04T16:52:44+00:00`` -> ``2026-12-04 16:52`` (UTC, as stored)."""
    if not stamp:
        return "-"
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp


def ms(value: object) -> str:
    return f"{value:.2f} ms" if isinstance(value, int | float) else "-"


def number(value: object, digits: int = 0) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"
