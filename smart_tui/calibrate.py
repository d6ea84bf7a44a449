"""Calibration: an A/A run (baseline against baseline) that measures this host's
noise floor and plans how long windows must be.

Nothing is changed on the server. Two back-to-back baseline windows go through the
same probe and statistics as a real run; ``plan_window`` turns their spread into
the window length that detects IMPROVE_PCT at 80% and 95% power."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from smart_tui.decide import WindowPlan, plan_window
from smart_tui.errors import SmartError
from smart_tui.experiments import Experiment
from smart_tui.probe import ProbeConfig, run_probe
from smart_tui.records import Samples, scored_samples
from smart_tui.settings import Settings
from smart_tui.target import resolve_target

log = logging.getLogger("smart_tui.calibrate")

POWERS = (0.8, 0.95)


@dataclass(frozen=True)
class Calibration:
    """The A/A windows' verdict and the window plans derived from them."""

    experiment_id: str
    url: str
    rate_rps: float
    plans: list[WindowPlan]

    def describe(self) -> str:
        first = self.plans[0]
        effect = first.aa_effect
        lines = [
            f"calibration of {self.experiment_id} ({self.url}) at "
            f"{self.rate_rps:g} req/s, {first.aa_samples} samples per arm",
            f"A/A p50 ratio {effect.ratio:.3f} [{effect.low:.3f}, {effect.high:.3f}]"
            if effect.ratio and effect.low and effect.high
            else "A/A p50 ratio: not estimable",
        ]
        for plan in self.plans:
            seconds = (
                f" (~{plan.seconds_per_arm:.0f} s per window)"
                if plan.seconds_per_arm
                else ""
            )
            lines.append(
                f"to KEEP a true {plan.expected_improve_pct:g}% gain past the "
                f"{plan.improve_pct:g}% threshold with {plan.power:.0%} power: "
                f"{plan.samples_per_arm} samples per arm{seconds}"
            )
        lines.extend(f"- {reason}" for reason in first.reasons)
        return "\n".join(lines)


def _window(config: ProbeConfig) -> Samples:
    return scored_samples(run_probe(config))


def calibrate(settings: Settings, experiment: Experiment) -> Calibration:
    """Measure two baseline windows of BASELINE_SECONDS and plan from them."""
    target = resolve_target(settings)
    url = experiment.resolve_url(target.url)
    rate = experiment.meta.rate_rps or settings.probe_rate_rps
    config = ProbeConfig(
        url=url,
        rate_rps=rate,
        duration_s=settings.baseline_seconds,
        connections=settings.probe_connections,
        timeout_s=settings.probe_timeout_ms / 1000,
        warmup_s=settings.warmup_seconds,
        headers=dict(experiment.meta.headers),
    )
    log.info("A/A calibration of %s: two windows of %g s", url, config.duration_s)
    first = _window(config)
    second = _window(config)
    policy: dict[str, Any] = {
        "improve_pct": settings.improve_pct,
        "max_err_delta_pct": settings.max_err_delta_pct,
        "confidence": settings.confidence,
    }
    try:
        plans = [
            plan_window(
                first.latencies_ms,
                second.latencies_ms,
                aa_baseline_t_s=first.t_s,
                aa_variant_t_s=second.t_s,
                power=power,
                **policy,
            )
            for power in POWERS
        ]
    except ValueError as exc:
        raise SmartError(
            f"calibration of {experiment.id} failed: {exc}; raise BASELINE_SECONDS "
            "or PROBE_RATE_RPS"
        ) from None
    return Calibration(experiment.id, url, rate, plans)
