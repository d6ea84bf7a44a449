"""``DatabaseScreen``: a screen that shows what is in the database and follows it.
Reloaded when the database changed, at once if it is the screen shown, else when
it is next shown, so hidden screens cost nothing while a run writes every second."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.screen import Screen

if TYPE_CHECKING:
    from smart_tui.tui.app import SmartApp


class DatabaseScreen(Screen[None]):
    def __init__(self) -> None:
        super().__init__()
        self._stale = False

    @property
    def smart(self) -> SmartApp:
        return cast("SmartApp", self.app)

    def follow_database(self) -> None:
        """Load now and on every change; call from ``on_mount``."""
        self.watch(self.smart, "db_generation", self._database_changed)

    def _database_changed(self) -> None:
        if self.is_current:
            self.reload()
        else:
            self._stale = True

    def on_screen_resume(self) -> None:
        if self._stale:
            self._stale = False
            self.reload()

    def reload(self) -> None:
        raise NotImplementedError
