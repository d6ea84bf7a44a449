"""``KeyBar``: the keys that work here, on one line at the bottom of a screen.

It stands in for Textual's ``Footer``, which mounts a widget per key and rebuilds
them all whenever the bindings change (every screen switch and focus move): 25 to
40 ms of each key press on this app. This is one widget and one ``update``. Keys
are bold and disabled keys dim, so it reads the same without colour."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.text import Text
from textual.binding import ActiveBinding, Binding
from textual.screen import Screen
from textual.widgets import Static

KeyDisplay = Callable[[Binding], str]


def key_line(
    active: Iterable[ActiveBinding], key_display: KeyDisplay, palette: str = ""
) -> Text:
    """The shown bindings as ``key description`` pairs; a group's keys together
    once, under the group's description (``12345 screens``)."""
    entries: list[tuple[str, str, bool]] = []
    grouped: dict[Binding.Group, int] = {}
    seen_actions: set[str] = set()
    for item in active:
        binding = item.binding
        if not binding.show or binding.action in seen_actions:
            continue
        seen_actions.add(binding.action)
        key = key_display(binding)
        group = binding.group
        if group is None:
            entries.append((key, binding.description, item.enabled))
        elif group in grouped:
            keys, description, enabled = entries[grouped[group]]
            joiner = "" if group.compact else " "
            entries[grouped[group]] = (keys + joiner + key, description, enabled)
        else:
            grouped[group] = len(entries)
            entries.append((key, group.description, item.enabled))

    line = Text(no_wrap=True, overflow="ellipsis")
    for index, (key, description, enabled) in enumerate(entries):
        if index:
            line.append("  ")
        line.append(key, style="bold" if enabled else "dim")
        line.append(f" {description}", style="" if enabled else "dim")
    if palette:
        line.append(f"  {palette}", style="dim")
    return line


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        padding: 0 1;
        background: $footer-background;
        color: $footer-foreground;
    }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._show_keys)
        self._show_keys(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _show_keys(self, screen: Screen[Any]) -> None:
        active = screen.active_bindings
        palette = ""
        if self.app.ENABLE_COMMAND_PALETTE:
            found = active.get(self.app.COMMAND_PALETTE_BINDING)
            if found is not None:
                palette = f"{self.app.get_key_display(found.binding)} palette"
        self.update(key_line(active.values(), self.app.get_key_display, palette))
