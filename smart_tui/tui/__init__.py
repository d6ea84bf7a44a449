"""The Textual front end: ``build_app`` is the one factory the CLI and the tests use,
``run_app`` runs it and makes sure a run started in it has reverted before the
process ends, however the app ended (quit, crash, SIGHUP)."""

from __future__ import annotations

from smart_tui.settings import Settings
from smart_tui.tui.app import Clock, SmartApp, utc_clock

# A stopped run reverts within a second of probing, or after a settle/cooldown pause
# and the revert script; wait that long, then give up rather than hang forever.
STOP_GRACE_S = 600.0


def build_app(settings: Settings, *, clock: Clock = utc_clock) -> SmartApp:
    """The app over ``settings``; ``clock`` gives "now" (fixed in snapshot tests)."""
    return SmartApp(settings, clock=clock)


def run_app(settings: Settings) -> int:
    app = build_app(settings)
    try:
        code = app.run()
    finally:
        control = app.control
        if control is not None:
            control.stop.set()
            control.done.wait(STOP_GRACE_S)
    return int(code or 0)


__all__ = ["SmartApp", "build_app", "run_app"]
