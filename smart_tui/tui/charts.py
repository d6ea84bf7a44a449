"""Pure helpers behind the live chart: bucket per-second figures to the chart's
width and draw them as text with plotext. No Textual here, so each is a plain
function with unit tests; the widget only holds the series and its size."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

SPARK_BLOCKS = " ▁▂▃▄▅▆▇█"
# One character per series: told apart without colour.
MARKERS = ["o", "x", "+", "*", "#", "@"]


def bucket(values: Sequence[float | None], width: int) -> list[float | None]:
    """``values`` squeezed into at most ``width`` buckets, keeping each bucket's max.

    The max, not the mean: a latency spike must stay visible when squeezed."""
    if width <= 0:
        return []
    if len(values) <= width:
        return list(values)
    size = len(values) / width
    buckets: list[float | None] = []
    for index in range(width):
        chunk = values[int(index * size) : int((index + 1) * size)]
        present = [value for value in chunk if value is not None]
        buckets.append(max(present) if present else None)
    return buckets


def sparkline(values: Sequence[float | None], width: int) -> str:
    """One line of block characters; a gap where a second had no answer."""
    squeezed = bucket(values, width)
    present = [value for value in squeezed if value is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = (high - low) or 1.0
    steps = len(SPARK_BLOCKS) - 1
    return "".join(
        " "
        if value is None
        else SPARK_BLOCKS[1 + round((value - low) / span * (steps - 1))]
        for value in squeezed
    )


def latency_plot(
    series: Mapping[str, Sequence[float | None]], width: int, height: int
) -> str:
    """A plotext line chart of named latency series (ms per second) as plain text.

    Each series gets its own marker character and the text is uncoloured, so the
    lines stay apart on a monochrome terminal (NO_COLOR) and in snapshots."""
    drawable: dict[str, list[tuple[int, float]]] = {}
    for name, values in series.items():
        points = [
            (second, value)
            for second, value in enumerate(values)
            if value is not None and math.isfinite(value)
        ]
        if points:
            drawable[name] = points
    if not drawable:
        return "waiting for the first second…"

    # Imported on the first draw: plotext takes ~80 ms to import, which the first
    # screen of ``smart-tui`` does not need.
    from plotext import figure, uncolorize

    # The legend on a line of its own: plotext's boxed legend hid a third of the
    # plot at 80x24.
    legend = []
    figure.clear()
    figure.plot_size(max(width, 20), max(height - 1, 5))
    for index, (name, points) in enumerate(drawable.items()):
        xs, ys = zip(*points, strict=True)
        marker = MARKERS[index % len(MARKERS)]
        figure.draw(figure.signal(list(xs), list(ys), marker=marker).lines())
        legend.append(f"{marker} {name}")
    text = uncolorize(figure.build())
    figure.clear()
    return "  ".join(legend) + "\n" + str(text)


def time_left_s(elapsed_s: float, planned_s: float) -> float:
    return max(planned_s - elapsed_s, 0.0)


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; short and fixed-width enough for a status line."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
