"""What every measurement source returns: a ``SourceResult`` (a ``ProbeResult``), built
from per-request samples a second at a time, or from window aggregates alone.

Samples go through the probe's own ``Collector``, so storage, the CSV, the dashboard
and ``decide`` read them as they read the probe's. Aggregates (a script's JSON, wrk's
report) carry no requests: the window has no seconds and its summary is theirs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from smart_tui.errors import ExperimentError
from smart_tui.probe import ProbeConfig, ProbeResult, SecondStats
from smart_tui.probe.collect import Collector
from smart_tui.probe.run import SamplesCallback

SecondCallback = Callable[[SecondStats], None]


class SourceError(ExperimentError):
    """A measurement source failed or printed something unreadable (exit code 4)."""

    title = "measurement source failed"


class Aggregates(BaseModel):
    """Window figures without per-request samples: one JSON object from a measure
    script, or wrk's report. ``requests`` counts every request, failed ones too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: int = Field(ge=1)
    p50_ms: float = Field(ge=0, allow_inf_nan=False)
    p90_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    p95_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    p99_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    mean_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    status_5xx: int = Field(default=0, ge=0)
    conn_errors: int = Field(default=0, ge=0)
    timeouts: int = Field(default=0, ge=0)
    duration_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @property
    def errors(self) -> int:
        """Failed requests as ``scored_samples`` counts them: 5xx or no answer."""
        return self.status_5xx + self.conn_errors + self.timeouts

    def summary(self) -> dict[str, Any]:
        """The figures ``ProbeResult.summary`` would give, where these say them."""

        def ms(value: float | None) -> float:
            return math.nan if value is None else value

        rate = self.requests / self.duration_s if self.duration_s else math.nan
        return {
            "requests": self.requests,
            "requests_total": self.requests,
            "duration_s": self.duration_s or 0.0,
            "intended_rps": rate,
            "achieved_rps": rate,
            "mean_ms": ms(self.mean_ms),
            "p50_ms": self.p50_ms,
            "p90_ms": ms(self.p90_ms),
            "p95_ms": ms(self.p95_ms),
            "p99_ms": ms(self.p99_ms),
            "p999_ms": math.nan,
            "max_ms": ms(self.max_ms),
            "status_5xx": self.status_5xx,
            "conn_errors": self.conn_errors,
            "timeouts": self.timeouts,
            "error_rate": self.errors / self.requests,
        }


@dataclass
class SourceResult(ProbeResult):
    """A window measured by a source other than (or as well as) the probe.

    ``aggregates`` set means the source gave no per-request samples: the arrays and
    ``per_second`` are empty and ``summary()`` reports the aggregates. ``extra`` adds
    source-specific figures to the summary (e.g. upstream times from the log)."""

    source: str = "probe"
    aggregates: Aggregates | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def wrap(cls, result: ProbeResult, source: str, **kwargs: Any) -> SourceResult:
        values = {f.name: getattr(result, f.name) for f in fields(ProbeResult)}
        return cls(**values, source=source, **kwargs)

    def summary(self) -> dict[str, Any]:
        data = super().summary()
        data["mode"] = self.source
        data["source"] = self.source
        if self.aggregates is not None:
            data.update(self.aggregates.summary())
        data.update(self.extra)
        return data


def aggregate_result(
    config: ProbeConfig, source: str, aggregates: Aggregates, **extra: Any
) -> SourceResult:
    """A window known only by its aggregates: no seconds, no samples."""
    empty = Collector(config).result()
    return SourceResult.wrap(empty, source, aggregates=aggregates, extra=extra)


class SampleWindow:
    """Feeds per-request samples into a ``Collector`` one whole second at a time,
    calling ``on_samples`` then ``on_second`` as the probe's ``run_probe`` does; the
    first ``warmup_seconds`` are recorded but not scored."""

    def __init__(
        self,
        config: ProbeConfig,
        on_second: SecondCallback | None,
        on_samples: SamplesCallback | None,
        *,
        warmup_seconds: int,
    ) -> None:
        self.collector = Collector(config)
        self.warmup_seconds = warmup_seconds
        self.on_second = on_second
        self.on_samples = on_samples

    def add_second(
        self,
        second: int,
        t_s: npt.NDArray[np.float64],
        latencies_ms: npt.NDArray[np.float64],
        statuses: npt.NDArray[np.int16],
    ) -> None:
        stats = self.collector.add_second(
            second,
            np.round(t_s * 1e9).astype(np.int64),
            np.round(latencies_ms * 1e6).astype(np.int64),
            statuses.astype(np.int16),
            span_s=1.0,
            completions=int((statuses >= 100).sum()),
            warmup=second < self.warmup_seconds,
        )
        if self.on_samples is not None:
            self.on_samples(stats, *self.collector.last_second())
        if self.on_second is not None:
            self.on_second(stats)

    def add_all(
        self,
        t_s: npt.NDArray[np.float64],
        latencies_ms: npt.NDArray[np.float64],
        statuses: npt.NDArray[np.int16],
    ) -> None:
        """Every second from 0 to the last sample's, empty seconds included."""
        seconds = np.floor(t_s).astype(int)
        last = int(seconds.max()) if seconds.size else -1
        for second in range(last + 1):
            mask = seconds == second
            self.add_second(second, t_s[mask], latencies_ms[mask], statuses[mask])

    def result(self, source: str, *, stopped_early: bool = False) -> SourceResult:
        probe_like = self.collector.result(stopped_early=stopped_early)
        return SourceResult.wrap(probe_like, source)
