"""A run's files under ``var/runs/<run_id>/`` and the shapes stored per window.

``run.log`` receives every log line of the run (script output included) and
``measurements.csv`` one row per measured second, with intended and achieved rate,
as the bash seed promised operators."""

from __future__ import annotations

import csv
import json
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from smart_tui.probe import ProbeResult, SecondStats
from smart_tui.probe.model import STATUS_CONN_ERROR, STATUS_UNSENT

CSV_COLUMNS = [
    "role",
    "variant",
    "second",
    "intended",
    "sent",
    "completed",
    "achieved_rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "status_5xx",
    "conn_errors",
    "timeouts",
    "warmup",
    "flagged",
    "flag_reason",
]
SAMPLES_ENCODING = "reservoir-json+zlib"


def _finite(value: Any) -> Any:
    """JSON has no NaN: an undefined figure (no requests) is stored as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class Samples:
    """The requests a decision scores, in time order."""

    latencies_ms: npt.NDArray[np.float64]
    errors: npt.NDArray[np.bool_]
    t_s: npt.NDArray[np.float64]
    conn_errors: int


def scored_samples(result: ProbeResult) -> Samples:
    """Requests of scored seconds that reached the server; 5xx, refused connections
    and timeouts count as errors. Requests the probe never sent are the probe's
    fault, not the server's, so they are left out."""
    mask = result.scored_mask() & (result.statuses != STATUS_UNSENT)
    statuses = result.statuses[mask]
    return Samples(
        latencies_ms=result.latencies_ms[mask],
        errors=(statuses >= 500) | (statuses <= 0),
        t_s=result.t_s[mask],
        conn_errors=int((statuses == STATUS_CONN_ERROR).sum()),
    )


def combine(blocks: list[tuple[float, Samples]]) -> Samples:
    """One arm from several windows, each ``(offset_s, samples)``: send times are
    shifted onto one clock so time batches follow the real order of blocks."""
    return Samples(
        latencies_ms=np.concatenate([s.latencies_ms for _, s in blocks]),
        errors=np.concatenate([s.errors for _, s in blocks]),
        t_s=np.concatenate([s.t_s + offset for offset, s in blocks]),
        conn_errors=sum(s.conn_errors for _, s in blocks),
    )


def window_summary(result: ProbeResult) -> dict[str, Any]:
    """The probe's summary plus the 5xx share in percent, JSON-safe."""
    summary = {key: _finite(value) for key, value in result.summary().items()}
    requests = summary.get("requests") or 0
    summary["error_pct"] = (
        100.0 * summary.get("status_5xx", 0) / requests if requests else None
    )
    return summary


class RunFiles:
    """The folder of one run and the files in it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log_path = folder / "run.log"
        self.csv_path = folder / "measurements.csv"
        self._handler: logging.Handler | None = None

    def open_log(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_path, encoding="utf-8")
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logging.getLogger("smart_tui").addHandler(handler)
        self._handler = handler

    def close_log(self) -> None:
        if self._handler is not None:
            logging.getLogger("smart_tui").removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def append_seconds(self, role: str, variant: str, result: ProbeResult) -> None:
        new_file = not self.csv_path.exists()
        with self.csv_path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, CSV_COLUMNS, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            for stats in result.per_second:
                row = {key: _finite(value) for key, value in stats.to_dict().items()}
                writer.writerow({**row, "role": role, "variant": variant})


def second_row(stats: SecondStats) -> tuple[int, dict[str, Any], str | None]:
    """One second as the store keeps it: figures, and the HDR histogram apart."""
    figures = {
        key: _finite(value) for key, value in stats.to_dict().items() if key != "hdr"
    }
    return stats.second, figures, stats.hdr or None


def samples_for_store(result: ProbeResult) -> tuple[str, bytes]:
    """The bounded reservoir of raw samples, compressed, to recompute a decision."""
    reservoir = result.to_storage()["reservoir"]
    return SAMPLES_ENCODING, zlib.compress(json.dumps(reservoir).encode())
