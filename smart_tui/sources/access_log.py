"""The ``access_log`` source: passive measurement of real traffic from nginx's access
log, in the lab's tab-separated ``log_format smart`` (README: Measurement sources).

The log is tailed from its end for the window; each line's ``$request_time`` is its
latency, ``$status`` its outcome and its ``$time_iso8601`` (when it ended, to the
second) its second. Requests whose user agent is smart-tui's own are left out."""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

import numpy as np

from smart_tui.experiments import Experiment
from smart_tui.probe import USER_AGENT, ProbeConfig
from smart_tui.probe.run import SamplesCallback
from smart_tui.sources.window import (
    SampleWindow,
    SecondCallback,
    SourceError,
    SourceResult,
)

log = logging.getLogger("smart_tui.sources")

# "smart-tui-probe/": every version of the probe, and wrk when smart-tui runs it.
OWN_AGENT_PREFIX = USER_AGENT.partition("/")[0] + "/"
LOG_FORMAT = (
    "log_format smart '$time_iso8601\\t$status\\t$request_time\\t"
    "$upstream_response_time\\t$request_method $request_uri\\t$body_bytes_sent\\t"
    "$http_user_agent';"
)
FIELDS = 7
# nginx writes a buffered log at least every flush interval (the lab's: 1 s); a
# second is read as complete this long after it ended.
FLUSH_GRACE_S = 2.0
_POLL_S = 0.2
# "$upstream_response_time" lists one time per upstream tried: "0.010, 0.020 : 0.003".
_UPSTREAM_SEPARATORS = re.compile(r"\s*[,:]\s*")


@dataclass
class _Line:
    ended_unix_s: int
    latency_ms: float
    status: int
    upstream_ms: float | None


@dataclass
class _Counts:
    own: int = 0
    malformed: int = 0
    late: int = 0
    first_malformed: str = ""
    upstream_ms: list[float] = field(default_factory=list)


class _Tail:
    """New complete lines of a file from where it ended at open, across rotation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[bytes] = path.open("rb")
        self.handle.seek(0, os.SEEK_END)
        self.inode = os.fstat(self.handle.fileno()).st_ino
        self.partial = b""

    def lines(self) -> list[str]:
        chunk = self.handle.read()
        try:
            current = self.path.stat()
        except FileNotFoundError:
            current = None
        if current is not None and (
            current.st_ino != self.inode or current.st_size < self.handle.tell()
        ):
            # Rotated (renamed or truncated): finish the old file, go on in the new.
            self.handle.close()
            self.handle = self.path.open("rb")
            self.inode = os.fstat(self.handle.fileno()).st_ino
            chunk += self.handle.read()
        data = self.partial + chunk
        complete, _, self.partial = data.rpartition(b"\n")
        if not complete:
            return []
        return complete.decode("utf-8", "replace").split("\n")

    def close(self) -> None:
        self.handle.close()


def measure_access_log(
    experiment: Experiment,
    config: ProbeConfig,
    *,
    path: Path,
    on_second: SecondCallback | None,
    stop: threading.Event,
    on_samples: SamplesCallback | None,
) -> SourceResult:
    """Read the real requests nginx logged during one window of ``config.total_s``."""
    try:
        tail = _Tail(path)
    except OSError as exc:
        raise SourceError(
            f"{experiment.id}: cannot read the access log {path} "
            f"({exc.strerror}); set access_log in meta.json to nginx's access log"
        ) from None
    # Seconds are whole: the window starts at the next one.
    start_s = math.ceil(time.time())
    seconds = math.ceil(config.total_s)
    window = SampleWindow(
        config, on_second, on_samples, warmup_seconds=config.warmup_seconds
    )
    pending: dict[int, list[_Line]] = defaultdict(list)
    counts = _Counts()
    emitted = 0
    try:
        while emitted < seconds and not stop.is_set():
            for text in tail.lines():
                _take(text, start_s, seconds, emitted, pending, counts)
            complete = math.floor(time.time() - start_s - FLUSH_GRACE_S)
            while emitted < min(complete, seconds):
                _emit(window, emitted, pending.pop(emitted, []), counts)
                emitted += 1
            stop.wait(_POLL_S)
    finally:
        tail.close()

    _check(experiment.id, path, window, counts)
    result = window.result("access_log", stopped_early=emitted < seconds)
    upstream = np.array(counts.upstream_ms, dtype=np.float64)
    result.extra = {
        "access_log": str(path),
        "own_requests_ignored": counts.own,
        "malformed_lines": counts.malformed,
        "late_lines": counts.late,
        "upstream_requests": int(upstream.size),
        "upstream_p50_ms": float(np.percentile(upstream, 50))
        if upstream.size
        else math.nan,
        "upstream_p99_ms": float(np.percentile(upstream, 99))
        if upstream.size
        else math.nan,
    }
    return result


def _take(
    text: str,
    start_s: int,
    seconds: int,
    emitted: int,
    pending: dict[int, list[_Line]],
    counts: _Counts,
) -> None:
    """File one log line under its second of the window, or count why not."""
    if not text.strip():
        return
    row = next(csv.reader([text], delimiter="\t", quoting=csv.QUOTE_NONE))
    line = _parse(row)
    if line is None:
        counts.malformed += 1
        counts.first_malformed = counts.first_malformed or text[:80]
        return
    if row[6].startswith(OWN_AGENT_PREFIX):
        counts.own += 1
        return
    second = line.ended_unix_s - start_s
    if not 0 <= second < seconds:
        return
    if second < emitted:
        counts.late += 1
        return
    pending[second].append(line)


def _parse(row: list[str]) -> _Line | None:
    if len(row) != FIELDS:
        return None
    try:
        ended_s = datetime.fromisoformat(row[0]).timestamp()
        status = int(row[1])
        latency_ms = float(row[2]) * 1000
    except ValueError:
        return None
    upstream: float | None = None
    times = [part for part in _UPSTREAM_SEPARATORS.split(row[3]) if part != "-"]
    if times:
        try:
            upstream = sum(float(part) for part in times) * 1000
        except ValueError:
            return None
    if not (100 <= status <= 999 and math.isfinite(latency_ms) and latency_ms >= 0):
        return None
    return _Line(int(ended_s), latency_ms, status, upstream)


def _emit(
    window: SampleWindow, second: int, lines: list[_Line], counts: _Counts
) -> None:
    counts.upstream_ms.extend(
        line.upstream_ms for line in lines if line.upstream_ms is not None
    )
    window.add_second(
        second,
        np.full(len(lines), float(second)),
        np.array([line.latency_ms for line in lines], dtype=np.float64),
        np.array([line.status for line in lines], dtype=np.int16),
    )


def _check(
    experiment_id: str, path: Path, window: SampleWindow, counts: _Counts
) -> None:
    """A window with nothing readable in it is a setup problem, not a measurement."""
    seen = sum(s.intended for s in window.collector.seconds if s.scored)
    if counts.malformed and not seen:
        raise SourceError(
            f"{experiment_id}: {path} line {counts.first_malformed!r} is not in the "
            f"expected format; give nginx `{LOG_FORMAT}` and `access_log {path} "
            "smart;`"
        )
    if counts.malformed:
        log.warning("%s: %d lines not in log_format smart", path, counts.malformed)
    if counts.late:
        log.warning(
            "%s: %d lines arrived after their second was scored; lower the "
            "access_log flush interval",
            path,
            counts.late,
        )
    if not seen and window.collector.seconds:
        raise SourceError(
            f"{experiment_id}: {path} logged no requests besides smart-tui's own "
            f"({counts.own}) in the scored window; the access_log source needs real "
            'traffic, or use "source": "probe"'
        )
