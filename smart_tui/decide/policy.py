"""Policy knobs shared by ``decide``, ``guardrail`` and ``plan_window``.

Defaults equal smart.conf's defaults; unknown keys are rejected so a typo in a
config never silently falls back to a default."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Policy:
    # What counts as a win: p50 must drop by at least this much, with confidence.
    improve_pct: float = 10.0
    # Largest tolerated rise of the 5xx rate, in percentage points.
    max_err_delta_pct: float = 2.0
    # Two-sided level of the reported interval; KEEP needs its upper bound to
    # clear the threshold, so the one-sided false-KEEP rate is (1 - confidence)/2.
    confidence: float = 0.95
    # "stats" (this module's tests) or "seed" (the original bash rule).
    policy: str = "stats"
    # Requests per arm before any KEEP: below ~200 a 2-point 5xx margin cannot be
    # shown even with zero errors, and tail quantiles are meaningless.
    min_samples_for_keep: int = 200
    # Secondary guards, as regressions of the variant over the baseline.
    max_p95_regress_pct: float = 15.0
    max_p99_regress_pct: float = 25.0
    max_throughput_drop_pct: float = 5.0
    # Time batches per arm (upper bound) and the smallest batch.  A fixed number
    # of batches keeps the degrees of freedom fixed, so more samples never make
    # the interval overconfident under autocorrelation.
    batches: int = 20
    min_batch_samples: int = 10
    # Fraction trimmed from each end of the batch medians (Yuen's test instead
    # of Welch's).  Off by default: it winsorizes away the spread a long burst
    # adds, and batch medians already shrug off the heavy tail.
    trim: float = 0.0
    # A baseline batch whose median sits this many robust SDs above the rest is
    # a disturbance (CPU burst) and is left out; 0 disables.
    burst_z: float = 3.5
    # A falling within-window trend is drift when the slope's one-sided upper
    # bound at 1 - drift_alpha is below zero; the effect is then corrected by
    # that bound (the least drift the data support) times the windows' gap.
    drift_alpha: float = 0.1
    # Stop early for a clear loss (non-binding futility bound).
    futility: bool = True
    # Power assumed when estimating how many samples an INCONCLUSIVE run needed.
    power: float = 0.8
    # Guardrail (checked every few seconds during the variant).
    guard_confidence: float = 0.999
    guard_p99_regress_pct: float = 50.0
    max_conn_err_delta_pct: float = 1.0
    min_guard_samples: int = 50

    def __post_init__(self) -> None:
        checks = {
            "improve_pct": 0 < self.improve_pct < 100,
            "max_err_delta_pct": 0 <= self.max_err_delta_pct <= 100,
            "confidence": 0.5 <= self.confidence < 1,
            "policy": self.policy in ("stats", "seed"),
            "min_samples_for_keep": self.min_samples_for_keep >= 1,
            "max_p95_regress_pct": self.max_p95_regress_pct >= 0,
            "max_p99_regress_pct": self.max_p99_regress_pct >= 0,
            "max_throughput_drop_pct": 0 <= self.max_throughput_drop_pct <= 100,
            "batches": self.batches >= 3,
            "min_batch_samples": self.min_batch_samples >= 1,
            "trim": 0 <= self.trim < 0.5,
            "burst_z": self.burst_z >= 0,
            "drift_alpha": 0 <= self.drift_alpha <= 0.25,
            "power": 0.5 <= self.power < 1,
            "guard_confidence": 0.5 <= self.guard_confidence < 1,
            "guard_p99_regress_pct": self.guard_p99_regress_pct >= 0,
            "max_conn_err_delta_pct": 0 <= self.max_conn_err_delta_pct <= 100,
            "min_guard_samples": self.min_guard_samples >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"invalid decision policy value(s): {shown}")


POLICY_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Policy)}


def make_policy(where: str, overrides: dict[str, Any]) -> Policy:
    """Build a Policy, naming the caller and the known keys on a typo."""
    unknown = sorted(set(overrides) - set(POLICY_DEFAULTS))
    if unknown:
        known = ", ".join(sorted(POLICY_DEFAULTS))
        raise TypeError(
            f"{where}() got unknown policy key(s) {', '.join(unknown)}; known: {known}"
        )
    return Policy(**overrides)
