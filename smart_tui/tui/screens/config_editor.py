"""Config editor: every smart.conf key with its value, where it came from and its
documentation. An edited value is checked at once by the settings model and refused
inline with the reason; Ctrl+S writes the accepted changes, keeping comments."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from smart_tui.config import MASK, SECRET_KEYS, SettingRow
from smart_tui.tui.widgets.key_bar import KeyBar
from smart_tui.tui.widgets.status_line import StatusLine

if TYPE_CHECKING:
    from smart_tui.tui.app import SmartApp


class SettingInput(Input):
    """The value being edited; Escape leaves it, shown in the footer only here."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "screen.stop_editing", "Stop editing")
    ]


class ConfigScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "edit", "Edit"),
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("escape", "stop_editing", "Stop editing", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[SettingRow] = []
        self.changes: dict[str, str] = {}
        # How each changed key will show once saved (masked like the rest).
        self.edited: dict[str, str] = {}
        self.editing: str | None = None

    @property
    def smart(self) -> SmartApp:
        return cast("SmartApp", self.app)

    def compose(self) -> ComposeResult:
        yield StatusLine("Config")
        yield DataTable(id="settings", cursor_type="row")
        yield Static("", id="setting-doc", markup=False)
        yield SettingInput(id="setting-input", disabled=True, placeholder="Enter edits")
        yield Static("", id="setting-error", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        # The value last: a long path may be cut at 80 columns, its source not.
        self.query_one(DataTable).add_columns("key", "from", "value")
        self._fill()

    def _fill(self) -> None:
        self.rows = self.smart.setting_rows()
        table = self.query_one(DataTable)
        # Refilling must not move the cursor: the next edit is usually the next row.
        cursor = table.cursor_row
        table.clear()
        self.edited = self.smart.edited_values(self.changes) if self.changes else {}
        for row in self.rows:
            shown = self.edited.get(row.key, row.value_shown)
            source = "edited" if row.key in self.changes else row.source
            table.add_row(row.key, source, shown, key=row.key)
        if self.rows:
            table.move_cursor(row=min(cursor, len(self.rows) - 1))
        self._show_doc()

    def selected(self) -> SettingRow | None:
        row = self.query_one(DataTable).cursor_row
        return self.rows[row] if self.rows and row < len(self.rows) else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_doc()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_edit()

    def _show_doc(self) -> None:
        row = self.selected()
        target = self.smart.config_target()
        lines = []
        if row is not None:
            shown = self.edited.get(row.key, row.value_shown)
            source = "edited, not saved" if row.key in self.edited else row.source
            lines += [f"{row.key} = {shown} ({source})", row.doc]
        lines.append(f"file: {target}")
        self.query_one("#setting-doc", Static).update("\n".join(lines))

    def action_edit(self) -> None:
        row = self.selected()
        if row is None:
            return
        self.editing = row.key
        field = self.query_one(Input)
        field.disabled = False
        # A secret, or a URL whose credentials are masked, is typed afresh and
        # hidden: prefilling the masked text would save "****" over the real one.
        hidden = row.key in SECRET_KEYS or MASK in row.value_shown
        field.password = hidden
        field.placeholder = (
            "type the new value (the current one stays hidden)"
            if hidden
            else "Enter edits"
        )
        field.value = "" if hidden else self.changes.get(row.key, row.value_shown)
        if field.value == "(empty)":
            field.value = ""
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.editing is None:
            return
        error = self.smart.check_setting({**self.changes, self.editing: event.value})
        message = self.query_one("#setting-error", Static)
        if error is not None:
            message.update(f"refused: {error}")
            return
        self.changes[self.editing] = event.value
        message.update(f"{self.editing} accepted; Ctrl+S saves")
        self.action_stop_editing()
        self._fill()

    def action_stop_editing(self) -> None:
        self.editing = None
        field = self.query_one(Input)
        field.value = ""
        field.disabled = True
        self.query_one(DataTable).focus()

    def action_save(self) -> None:
        message = self.query_one("#setting-error", Static)
        if not self.changes:
            message.update("nothing to save")
            return
        error = self.smart.save_settings(self.changes)
        if error is not None:
            message.update(f"not saved: {error}")
            return
        message.update(
            f"saved {', '.join(sorted(self.changes))} to {self.smart.config_target()};"
            " the timer's next run uses them, this app after a restart"
        )
        self.changes = {}
        self._fill()
