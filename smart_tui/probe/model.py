"""What a probe is asked to do and what it found: config, per-second and window results.

Latencies are measured from each request's *intended* send time, so a stalled server
shows up in full. ``ProbeResult.to_storage()`` is the bounded, JSON-ready record the
storage layer persists; raw arrays stay in memory for the caller."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

from smart_tui import __version__
from smart_tui.errors import ConfigError

USER_AGENT = f"smart-tui-probe/{__version__}"

# Status codes for requests that got no HTTP response.
STATUS_CONN_ERROR = 0
STATUS_TIMEOUT = -1
# Every allowed connection was busy until the request's deadline passed, so it was
# never written to a socket: the probe could not deliver the intended load.
STATUS_UNSENT = -2

# A window is invalid when fewer than this share of the intended requests could be
# written to a socket (connection cap reached for long, or the probe too slow), or
# when too many of its seconds were flagged (see collect.EXCLUDED_SHARE_MAX).
SENT_RATIO_MIN = 0.99
# A second is flagged when the probe's own scheduler sent this late (p99): the
# latencies of that second then measure the probe's CPU, not the server.
SCHEDULER_LAG_P99_MAX_MS = 10.0

# Per-second HDR histograms: microseconds, 3 significant digits (1 us below 1 ms).
HDR_LOWEST_US = 1
HDR_SIGNIFICANT_DIGITS = 3
# Raw samples kept by ``to_storage``; ~10 bytes each before base64.
RESERVOIR_SIZE = 20_000
STORAGE_VERSION = 1

_EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class ProbeConfig:
    """One probe window. ``rate_rps=0`` means closed loop: every connection sends its
    next request as soon as the previous answer arrives (for finding the max rate)."""

    url: str
    rate_rps: float
    duration_s: float
    connections: int = 16
    timeout_s: float = 2.0
    # Whole seconds at the start that are recorded but never scored (rounded up).
    warmup_s: float = 0.0
    poisson: bool = False
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY_HEADERS)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the bad field and a usable value."""
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(
                f"probe URL {self.url!r} is not http://HOST[:PORT]/PATH; "
                "the probe speaks plain HTTP/1.1 only"
            )
        try:
            _ = parts.port
        except ValueError as exc:
            raise ConfigError(f"probe URL {self.url!r} has a bad port: {exc}") from None
        checks = [
            (math.isfinite(self.rate_rps) and self.rate_rps >= 0, "rate_rps >= 0"),
            (math.isfinite(self.duration_s) and self.duration_s > 0, "duration_s > 0"),
            (1 <= self.connections <= 10_000, "1 <= connections <= 10000"),
            (math.isfinite(self.timeout_s) and self.timeout_s > 0, "timeout_s > 0"),
            (math.isfinite(self.warmup_s) and self.warmup_s >= 0, "warmup_s >= 0"),
        ]
        for ok, rule in checks:
            if not ok:
                raise ConfigError(
                    f"bad probe setting for {self.url}: need {rule}; check the "
                    "PROBE_* keys in smart.conf, rate_rps in meta.json or the flags"
                )
        for name, value in self.headers.items():
            if any(c in name + value for c in "\r\n") or not name:
                raise ConfigError(f"bad probe header {name!r}: no CR/LF, non-empty")

    @property
    def warmup_seconds(self) -> int:
        return math.ceil(self.warmup_s)

    @property
    def total_s(self) -> float:
        """Warmup plus measured duration: how long requests are scheduled."""
        return self.warmup_seconds + self.duration_s

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["headers"] = dict(self.headers)
        return data


@dataclass
class SecondStats:
    """One second of the window, by intended send time (``second`` 0 = start).

    Counts are of requests intended in this second; ``achieved_rps`` counts answers
    (any outcome) that arrived during it. ``flagged`` seconds are left out of scoring,
    ``flag_reason`` says why; ``hdr`` is the base64 HdrHistogram (microseconds) of all
    latencies of the second, failures at the timeout value."""

    second: int
    intended: int
    sent: int
    completed: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    conn_errors: int
    timeouts: int
    unsent: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    achieved_rps: float
    lag_ms: float
    scheduler_lag_p99_ms: float
    flagged: bool
    flag_reason: str
    warmup: bool
    steal_pct: float | None = None
    cpu_pressure_pct: float | None = None
    hdr: str = ""

    @property
    def scored(self) -> bool:
        return not (self.flagged or self.warmup)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(values: npt.NDArray[np.float64], q: float) -> float:
    if values.size == 0:
        return math.nan
    return float(np.percentile(values, q))


def _b64(array: npt.NDArray[Any]) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


@dataclass
class ProbeResult:
    """Everything one ``run_probe`` call measured.

    ``latencies_ms``, ``statuses`` and ``t_s`` hold one entry per request in intended
    send order (statuses: HTTP code, 0 connection error, -1 timeout, -2 never sent;
    failures carry the timeout as latency). Window figures use only scored seconds:
    not warmup, not ``excluded_seconds``. ``fell_behind`` marks the whole window
    invalid: the intended load was not delivered (see ``fell_behind_reason``)."""

    config: ProbeConfig
    latencies_ms: npt.NDArray[np.float64]
    statuses: npt.NDArray[np.int16]
    t_s: npt.NDArray[np.float64]
    per_second: list[SecondStats]
    intended_rps: float
    achieved_rps: float
    duration_s: float
    fell_behind: bool
    fell_behind_reason: str
    excluded_seconds: list[int]
    exclusion_reasons: dict[int, str]
    stopped_early: bool = False
    scheduler: str = ""
    probe_pid: int = 0

    @property
    def histograms(self) -> list[str]:
        """Per-second encoded HdrHistograms (microseconds), in second order."""
        return [s.hdr for s in self.per_second]

    def scored_mask(self) -> npt.NDArray[np.bool_]:
        """Which requests count: those intended in a scored second."""
        scored = np.array([s.second for s in self.per_second if s.scored], dtype=int)
        seconds = np.floor(self.t_s).astype(int)
        return np.isin(seconds, scored)

    def summary(self) -> dict[str, Any]:
        """Flat, JSON-ready figures of the scored window (``--json`` output)."""
        mask = self.scored_mask()
        lat = self.latencies_ms[mask]
        st = self.statuses[mask]
        scored = [s for s in self.per_second if s.scored]
        lag = max((s.scheduler_lag_p99_ms for s in scored), default=0.0)
        return {
            "url": self.config.url,
            "mode": "closed" if self.config.rate_rps == 0 else "open",
            "connections": self.config.connections,
            "requests": int(lat.size),
            "requests_total": int(self.latencies_ms.size),
            "duration_s": round(self.duration_s, 3),
            "intended_rps": round(self.intended_rps, 2),
            "achieved_rps": round(self.achieved_rps, 2),
            "mean_ms": float(lat.mean()) if lat.size else math.nan,
            "p50_ms": _pct(lat, 50),
            "p90_ms": _pct(lat, 90),
            "p95_ms": _pct(lat, 95),
            "p99_ms": _pct(lat, 99),
            "p999_ms": _pct(lat, 99.9),
            "max_ms": float(lat.max()) if lat.size else math.nan,
            "status_2xx": int(((st >= 200) & (st < 300)).sum()),
            "status_3xx": int(((st >= 300) & (st < 400)).sum()),
            "status_4xx": int(((st >= 400) & (st < 500)).sum()),
            "status_5xx": int((st >= 500).sum()),
            "conn_errors": int((st == STATUS_CONN_ERROR).sum()),
            "timeouts": int((st == STATUS_TIMEOUT).sum()),
            "unsent": int((st == STATUS_UNSENT).sum()),
            "error_rate": float((st < 200).mean() + (st >= 500).mean())
            if st.size
            else 0.0,
            "scheduler_lag_p99_ms": lag,
            "fell_behind": self.fell_behind,
            "fell_behind_reason": self.fell_behind_reason,
            "seconds_scored": len(scored),
            "excluded_seconds": len(self.excluded_seconds),
            "exclusion_reasons": {str(k): v for k, v in self.exclusion_reasons.items()},
            "warmup_s": self.config.warmup_seconds,
            "stopped_early": self.stopped_early,
            "scheduler": self.scheduler,
        }

    def to_storage(self, reservoir_size: int = RESERVOIR_SIZE) -> dict[str, Any]:
        """The record to persist, JSON-serialisable and bounded in size.

        Keys: ``version``; ``config``; ``summary`` (as ``summary()``); ``seconds`` (one
        ``SecondStats.to_dict()`` each, with its base64 HdrHistogram in ``hdr``, so any
        percentile of any span of seconds can be recomputed by decoding and adding
        them); ``reservoir``: a uniform sample of at most ``reservoir_size`` requests
        in time order as base64 little-endian arrays ``t_s`` (float32), ``latency_ms``
        (float32), ``status`` (int16), with ``n_total``. A 10-minute window at
        5,000 req/s is well under 2 MB as JSON."""
        n = int(self.latencies_ms.size)
        if n > reservoir_size:
            rng = np.random.default_rng(0)
            idx = np.sort(rng.choice(n, size=reservoir_size, replace=False))
        else:
            idx = np.arange(n)
        return {
            "version": STORAGE_VERSION,
            "config": self.config.to_dict(),
            "summary": self.summary(),
            "seconds": [s.to_dict() for s in self.per_second],
            "reservoir": {
                "n_total": n,
                "n": int(idx.size),
                "t_s": _b64(self.t_s[idx].astype("<f4")),
                "latency_ms": _b64(self.latencies_ms[idx].astype("<f4")),
                "status": _b64(self.statuses[idx].astype("<i2")),
            },
        }


def decode_reservoir(
    stored: Mapping[str, Any],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int16]]:
    """``(t_s, latency_ms, status)`` arrays from ``to_storage()["reservoir"]``."""

    def arr(key: str, dtype: str) -> npt.NDArray[Any]:
        return np.frombuffer(base64.b64decode(stored[key]), dtype=dtype)

    return arr("t_s", "<f4"), arr("latency_ms", "<f4"), arr("status", "<i2")


def new_histogram(timeout_s: float) -> HdrHistogram:
    """An empty per-second histogram able to hold the timeout value (microseconds)."""
    highest_us = max(2, int(timeout_s * 1_000_000) * 2)
    return HdrHistogram(HDR_LOWEST_US, highest_us, HDR_SIGNIFICANT_DIGITS)


def merged_histogram(encoded: list[str], timeout_s: float) -> HdrHistogram:
    """Add stored per-second histograms back together, e.g. for a window's p99."""
    total = new_histogram(timeout_s)
    for item in encoded:
        if item:
            total.decode_and_add(item)
    return total


def format_summary(result: ProbeResult) -> str:
    """A human summary of a probe window, in the spirit of ``hey``'s."""
    s = result.summary()
    cfg = result.config
    mode = (
        "closed loop (as fast as possible)"
        if cfg.rate_rps == 0
        else f"open loop at {cfg.rate_rps:g} req/s"
        + (" (Poisson)" if cfg.poisson else "")
    )

    def ms(value: float) -> str:
        return "   n/a" if math.isnan(value) else f"{value:9.3f} ms"

    lines = [
        f"Probe of {cfg.url}: {mode}, up to {cfg.connections} connections",
        "",
        "Summary:",
        f"  Requests scored:  {s['requests']} of {s['requests_total']}",
        f"  Duration:         {s['duration_s']:.2f} s"
        + (f" (+{s['warmup_s']} s warmup)" if s["warmup_s"] else ""),
        f"  Intended rate:    {s['intended_rps']:.1f} req/s"
        if cfg.rate_rps
        else "  Intended rate:    as fast as possible",
        f"  Achieved rate:    {s['achieved_rps']:.1f} req/s",
        "  Fell behind:      "
        + (
            f"YES, window invalid ({s['fell_behind_reason']})"
            if s["fell_behind"]
            else "no"
        ),
        "",
        "Latency (from intended send time):",
    ]
    for key in ("mean", "p50", "p90", "p95", "p99", "p999", "max"):
        lines.append(f"  {key:>5}  {ms(s[key + '_ms'])}")
    lines += ["", "Status codes:"]
    for cls in ("2xx", "3xx", "4xx", "5xx"):
        if s[f"status_{cls}"]:
            lines.append(f"  [{cls}] {s[f'status_{cls}']} responses")
    lines += [
        "",
        "Errors:",
        f"  connection errors {s['conn_errors']}, timeouts {s['timeouts']}, "
        f"never sent {s['unsent']}",
    ]
    if result.excluded_seconds:
        lines += ["", f"Excluded seconds ({len(result.excluded_seconds)}):"]
        for second in result.excluded_seconds:
            lines.append(f"  {second:4d}  {result.exclusion_reasons.get(second, '')}")
    if result.stopped_early:
        lines += ["", "Stopped early: figures cover the part that ran."]
    return "\n".join(lines)
