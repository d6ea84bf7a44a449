"""Judging a variant window while it is still being measured.

``VariantWatch`` collects the variant's scored requests second by second and, every
few seconds, asks first the guardrail (a significant rise of 5xx, connection errors
or p99 reverts at once) and then ``decide(final=False)`` (a clear win or loss ends
the window early, within the alpha spent so far). The caller stops the probe when
``add`` returns a decision."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from smart_tui.decide import Decision, decide, guardrail
from smart_tui.probe import SecondStats
from smart_tui.probe.model import STATUS_CONN_ERROR, STATUS_UNSENT
from smart_tui.records import Samples

log = logging.getLogger("smart_tui.sequential")


def expected_variant_samples(
    source: str, rate_rps: float, seconds: float, baseline: Samples
) -> int:
    """How many samples a full variant window should hold, which sizes the looks.
    The probe sends at its set rate; the other sources (an access log of real
    traffic, a script, wrk) deliver what the server saw, so the baseline's own rate
    stands in for it."""
    planned = int(rate_rps * seconds)
    if source == "probe" or baseline.t_s.size < 2:
        return planned
    span_s = float(baseline.t_s.max() - baseline.t_s.min())
    if span_s <= 0:
        return planned
    return max(1, int(baseline.t_s.size / span_s * seconds))


@dataclass
class EarlyStop:
    """Why a window ended before its planned length."""

    decision: Decision
    kind: str  # "guardrail" or "sequential"
    after_s: int


@dataclass
class VariantWatch:
    """The growing variant window, looked at every ``look_every_s`` seconds."""

    baseline: Samples
    baseline_conn_errors: int
    expected_samples: int
    look_every_s: int
    policy: Mapping[str, Any]
    sequential: bool = True
    latencies_ms: list[npt.NDArray[np.float64]] = field(default_factory=list)
    errors: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    t_s: list[npt.NDArray[np.float64]] = field(default_factory=list)
    conn_errors: int = 0
    scored_seconds: int = 0
    looks: int = 0

    def add(
        self,
        stats: SecondStats,
        t_s: npt.NDArray[np.float64],
        latencies_ms: npt.NDArray[np.float64],
        statuses: npt.NDArray[np.int16],
    ) -> EarlyStop | None:
        """Take one second; return an ``EarlyStop`` when the window should end."""
        if not stats.scored:
            return None
        sent = statuses != STATUS_UNSENT
        self.latencies_ms.append(latencies_ms[sent])
        self.t_s.append(t_s[sent])
        self.errors.append((statuses[sent] >= 500) | (statuses[sent] <= 0))
        self.conn_errors += int((statuses == STATUS_CONN_ERROR).sum())
        self.scored_seconds += 1
        if self.scored_seconds % self.look_every_s:
            return None
        return self.look(stats.second)

    def look(self, second: int) -> EarlyStop | None:
        self.looks += 1
        variant_ms = np.concatenate(self.latencies_ms)
        variant_errors = np.concatenate(self.errors)
        variant_t_s = np.concatenate(self.t_s)
        base = self.baseline
        tripped = guardrail(
            base.latencies_ms,
            variant_ms,
            base.errors,
            variant_errors,
            baseline_conn_errors=self.baseline_conn_errors,
            variant_conn_errors=self.conn_errors,
            baseline_t_s=base.t_s,
            variant_t_s=variant_t_s,
            **self.policy,
        )
        if tripped is not None:
            log.warning("guardrail at %d s: %s", second, "; ".join(tripped.reasons))
            return EarlyStop(tripped, "guardrail", second)
        if not self.sequential or variant_ms.size >= self.expected_samples:
            return None
        interim = decide(
            base.latencies_ms,
            variant_ms,
            base.errors,
            variant_errors,
            final=False,
            max_variant_samples=self.expected_samples,
            baseline_t_s=base.t_s,
            variant_t_s=variant_t_s,
            **self.policy,
        )
        if interim.decision in ("KEEP", "REVERT"):
            log.info(
                "sequential look %d at %d s: %s", self.looks, second, interim.decision
            )
            return EarlyStop(interim, "sequential", second)
        return None
