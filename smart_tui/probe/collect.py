"""Turning one window's requests, a second at a time, into ``SecondStats`` and a
``ProbeResult``.

``Collector.add_second`` takes raw arrays (intended send times, latencies, statuses)
from any source: the probe's frames, a script's samples or an access log's lines. The
per-second HDR histogram, flags and window figures are built the same way for all."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from smart_tui.probe.model import (
    SCHEDULER_LAG_P99_MAX_MS,
    SENT_RATIO_MIN,
    STATUS_CONN_ERROR,
    STATUS_TIMEOUT,
    STATUS_UNSENT,
    ProbeConfig,
    ProbeResult,
    SecondStats,
    new_histogram,
)

NS_PER_MS = 1_000_000
# More than this share of excluded seconds leaves too little to judge a window by.
EXCLUDED_SHARE_MAX = 0.25


class Collector:
    """Accumulates seconds of requests into arrays and ``SecondStats``."""

    def __init__(self, config: ProbeConfig) -> None:
        self.config = config
        self.t_ns: list[npt.NDArray[np.int64]] = []
        self.lat_ns: list[npt.NDArray[np.int64]] = []
        self.status: list[npt.NDArray[np.int16]] = []
        self.seconds: list[SecondStats] = []
        self.spans_s: list[float] = []

    def add_frame(self, frame: dict[str, Any]) -> SecondStats:
        """One second as the probe's load process reports it."""
        return self.add_second(
            frame["second"],
            np.frombuffer(frame["intended_ns"], dtype=np.int64),
            np.frombuffer(frame["latency_ns"], dtype=np.int64),
            np.frombuffer(frame["status"], dtype=np.int16),
            span_s=frame["span_s"],
            completions=frame["completions"],
            warmup=bool(frame["warmup"]),
            lag_ms=float(frame["lag_ms"]),
            sched_lag_us=np.frombuffer(frame["sched_lag_us"], dtype=np.int32),
            flag_reasons=frame["flag_reasons"],
            steal_pct=frame["steal_pct"],
            cpu_pressure_pct=frame["cpu_pressure_pct"],
        )

    def add_second(
        self,
        second: int,
        t_ns: npt.NDArray[np.int64],
        lat_ns: npt.NDArray[np.int64],
        status: npt.NDArray[np.int16],
        *,
        span_s: float,
        completions: int,
        warmup: bool,
        lag_ms: float = 0.0,
        sched_lag_us: npt.NDArray[np.int32] | None = None,
        flag_reasons: Sequence[str] = (),
        steal_pct: float | None = None,
        cpu_pressure_pct: float | None = None,
    ) -> SecondStats:
        """Record the requests intended in ``second`` (times and latencies in ns)."""
        self.t_ns.append(t_ns)
        self.lat_ns.append(lat_ns)
        self.status.append(status)
        self.spans_s.append(span_s)
        lat_ms = lat_ns / NS_PER_MS
        hist = new_histogram(self.config.timeout_s)
        if lat_ns.size:
            values, counts = np.unique(
                np.clip(lat_ns // 1000, 1, hist.highest_trackable_value),
                return_counts=True,
            )
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                hist.record_value(value, count)

        def pct(q: float) -> float:
            return float(np.percentile(lat_ms, q)) if lat_ms.size else math.nan

        reasons = list(flag_reasons)
        sched_p99_ms = (
            float(np.percentile(sched_lag_us, 99)) / 1000
            if sched_lag_us is not None and sched_lag_us.size
            else 0.0
        )
        if sched_p99_ms > SCHEDULER_LAG_P99_MAX_MS:
            # The probe itself sent late (CPU-starved): those latencies are ours.
            reasons.append(f"probe behind schedule (p99 {sched_p99_ms:.0f} ms)")
        stats = SecondStats(
            second=second,
            intended=int(status.size),
            sent=int((status != STATUS_UNSENT).sum()),
            completed=int((status >= 100).sum()),
            status_2xx=int(((status >= 200) & (status < 300)).sum()),
            status_3xx=int(((status >= 300) & (status < 400)).sum()),
            status_4xx=int(((status >= 400) & (status < 500)).sum()),
            status_5xx=int((status >= 500).sum()),
            conn_errors=int((status == STATUS_CONN_ERROR).sum()),
            timeouts=int((status == STATUS_TIMEOUT).sum()),
            unsent=int((status == STATUS_UNSENT).sum()),
            p50_ms=pct(50),
            p90_ms=pct(90),
            p99_ms=pct(99),
            max_ms=float(lat_ms.max()) if lat_ms.size else math.nan,
            achieved_rps=completions / span_s,
            lag_ms=lag_ms,
            scheduler_lag_p99_ms=sched_p99_ms,
            flagged=bool(reasons),
            flag_reason="; ".join(reasons),
            warmup=warmup,
            steal_pct=steal_pct,
            cpu_pressure_pct=cpu_pressure_pct,
            hdr=hist.encode().decode("ascii") if lat_ns.size else "",
        )
        self.seconds.append(stats)
        return stats

    def last_second(
        self,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int16]]:
        """The latest second's requests: send times (s), latencies (ms), statuses."""
        return (
            self.t_ns[-1] / 1e9,
            self.lat_ns[-1] / NS_PER_MS,
            self.status[-1],
        )

    def result(
        self, *, stopped_early: bool = False, scheduler: str = "", pid: int = 0
    ) -> ProbeResult:
        """The window so far; scored figures use only seconds not warmup or flagged."""
        cfg = self.config

        def cat(parts: list[npt.NDArray[Any]], dtype: Any) -> npt.NDArray[Any]:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        t_s = cat(self.t_ns, np.int64) / 1e9
        lat_ms = cat(self.lat_ns, np.int64) / NS_PER_MS
        status = cat(self.status, np.int16).astype(np.int16)
        order = np.argsort(t_s, kind="stable")  # closed loop interleaves connections
        t_s, lat_ms, status = t_s[order], lat_ms[order], status[order]
        scored = [
            (s, span)
            for s, span in zip(self.seconds, self.spans_s, strict=True)
            if s.scored
        ]
        measured_s = sum(span for _, span in scored)
        intended = sum(s.intended for s, _ in scored)
        sent = sum(s.sent for s, _ in scored)
        completions = sum(s.achieved_rps * span for s, span in scored)
        # Closed loop has no intended rate; it "intends" what it managed to send.
        intended_rps = cfg.rate_rps or (intended / measured_s if measured_s else 0.0)
        reasons = []
        if cfg.rate_rps and intended and sent < SENT_RATIO_MIN * intended:
            reasons.append(
                f"only {sent} of {intended} intended requests could be sent "
                f"({100 * sent / intended:.1f}%): connection cap or probe too slow"
            )
        measured = [s for s in self.seconds if not s.warmup]
        flagged = [s for s in measured if s.flagged]
        if measured and len(flagged) > EXCLUDED_SHARE_MAX * len(measured):
            reasons.append(
                f"{len(flagged)} of {len(measured)} seconds excluded "
                "(probe or host too busy to trust the window)"
            )
        if stopped_early and not scored:
            reasons.append("stopped before any second could be scored")
        excluded = [s.second for s in self.seconds if s.flagged and not s.warmup]
        return ProbeResult(
            config=cfg,
            latencies_ms=lat_ms.astype(np.float64),
            statuses=status,
            t_s=t_s.astype(np.float64),
            per_second=self.seconds,
            intended_rps=float(intended_rps),
            achieved_rps=completions / measured_s if measured_s else 0.0,
            duration_s=measured_s,
            fell_behind=bool(reasons),
            fell_behind_reason="; ".join(reasons),
            excluded_seconds=excluded,
            exclusion_reasons={
                s.second: s.flag_reason for s in self.seconds if s.second in excluded
            },
            stopped_early=stopped_early,
            scheduler=scheduler,
            probe_pid=pid,
        )
