"""A plotext chart of latency per second that redraws only when its series or its
size changed; the drawing itself is ``charts.latency_plot``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from textual import events
from textual.widgets import Static

from smart_tui.tui.charts import latency_plot


class LatencyChart(Static):
    DEFAULT_CSS = """
    LatencyChart {
        height: 1fr;
        min-height: 6;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self._series: dict[str, list[float | None]] = {}

    def show(self, series: Mapping[str, Sequence[float | None]]) -> None:
        self._series = {name: list(values) for name, values in series.items()}
        self._draw()

    def on_resize(self, event: events.Resize) -> None:
        self._draw()

    def _draw(self) -> None:
        width, height = self.content_size
        if width and height:
            self.update(latency_plot(self._series, width, height))
