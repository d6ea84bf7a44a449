"""The ``?`` screen: every key of every screen, read from their bindings so it can
never drift from what the keys do."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from smart_tui.tui.widgets.key_bar import KeyBar

INTRO = (
    "smart-tui tries nginx changes and keeps only what the numbers prove.\n"
    "Everything works by keyboard; Ctrl+P opens the command palette, which lists "
    "every action."
)


def describe_bindings(bindings: list[BindingType]) -> list[str]:
    lines = []
    for binding in bindings:
        if isinstance(binding, Binding) and binding.description:
            key = binding.key_display or binding.key
            lines.append(f"  {key:<12} {binding.tooltip or binding.description}")
    return lines


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Close"),
        Binding("question_mark", "app.pop_screen", "Close", show=False),
    ]

    def __init__(
        self, app_bindings: list[BindingType], screens: dict[str, type[Screen[None]]]
    ) -> None:
        super().__init__()
        self.app_bindings = app_bindings
        self.screens = screens

    def compose(self) -> ComposeResult:
        sections = [INTRO, "", "Everywhere", *describe_bindings(self.app_bindings)]
        for title, screen in self.screens.items():
            sections += ["", title, *describe_bindings(list(screen.BINDINGS))]
        with VerticalScroll(id="help-box"):
            yield Static("\n".join(sections), markup=False)
        yield KeyBar()
