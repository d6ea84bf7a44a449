"""The line at the top of every screen: where you are, how many decisions wait for
an answer, and what the run is doing, all in words (no colour needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.widgets import Static

if TYPE_CHECKING:
    from smart_tui.tui.app import SmartApp


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        width: 1fr;
        background: $panel;
        color: $text;
        padding: 0 1;
    }
    """

    def __init__(self, title: str) -> None:
        super().__init__(id="status-line", markup=False)
        self.title = title

    def on_mount(self) -> None:
        app = cast("SmartApp", self.app)
        self.watch(app, "pending_count", self._refresh_text)
        self.watch(app, "run_summary", self._refresh_text)

    def _refresh_text(self) -> None:
        app = cast("SmartApp", self.app)
        self.update(
            f"{self.title} │ pending approvals: {app.pending_count} │ "
            f"run: {app.run_summary}"
        )
