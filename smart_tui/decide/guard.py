"""guardrail (checked every few seconds during the variant) and plan_window (the
A/A calibration's window-length planner)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from smart_tui.decide.core import Errors, Latencies, Times, _common, _exp, _pct, _pts
from smart_tui.decide.policy import make_policy
from smart_tui.decide.result import Decision, Effect, WindowPlan
from smart_tui.decide.stats import (
    batch,
    batch_count,
    compare_p50,
    design_effect,
    effective_counts,
    load_arm,
    rate_difference,
    tail_regression_p,
)


def guardrail(
    baseline_ms: Latencies,
    variant_ms: Latencies,
    baseline_errors: Errors,
    variant_errors: Errors,
    *,
    baseline_conn_errors: int = 0,
    variant_conn_errors: int = 0,
    baseline_t_s: Times = None,
    variant_t_s: Times = None,
    **policy: Any,
) -> Decision | None:
    """A REVERT Decision when the variant is significantly hurting, else None.

    Meant for the variant window so far, every few seconds.  Trips on a 5xx
    rise beyond ``max_err_delta_pct``, a connection-error rise beyond
    ``max_conn_err_delta_pct`` (``*_conn_errors`` count requests, among the
    samples, that failed to connect), or a p99 beyond ``guard_p99_regress_pct``.
    Each test is one-sided at ``guard_confidence`` (strict by default, because it
    is repeated many times).  Accepts every decide() policy key."""
    pol = make_policy("guardrail", policy)
    base = load_arm("baseline", baseline_ms, baseline_errors, baseline_t_s)
    var = load_arm("variant", variant_ms, variant_errors, variant_t_s)
    for name, count, arm_n in (
        ("baseline_conn_errors", baseline_conn_errors, base.n),
        ("variant_conn_errors", variant_conn_errors, var.n),
    ):
        if not 0 <= count <= arm_n:
            raise ValueError(f"{name}={count} is not within 0..{arm_n}")
    if min(base.n, var.n) < pol.min_guard_samples:
        return None
    level = 2 * pol.guard_confidence - 1  # two-sided level of a one-sided bound
    reasons: list[str] = []

    kb, nb, kv, nv = base.errors, base.n, var.errors, var.n
    if base.error_flags is not None and var.error_flags is not None:
        count = batch_count(min(nb, nv), pol.batches, pol.min_batch_samples)
        if count >= 3:
            eb = batch(base, count, 0.0).edges
            ev = batch(var, count, 0.0).edges
            kb, nb = effective_counts(kb, nb, design_effect(base.error_flags, eb))
            kv, nv = effective_counts(kv, nv, design_effect(var.error_flags, ev))
    for what, counts, margin_pct in (
        ("5xx", (kb, nb, kv, nv), pol.max_err_delta_pct),
        (
            "connection errors",
            (baseline_conn_errors, base.n, variant_conn_errors, var.n),
            pol.max_conn_err_delta_pct,
        ),
    ):
        diff, low, high = rate_difference(*counts, level)
        if low * 100 > margin_pct:
            reasons.append(
                f"{what} {_pts(diff)} pt [{_pts(low)}, {_pts(high)}]: beyond "
                f"{margin_pct:g} pt"
            )
    if min(base.n, var.n) * 0.01 >= 5:
        p = tail_regression_p(base.ms, var.ms, 0.99, pol.guard_p99_regress_pct)
        if p < 1 - pol.guard_confidence:
            ratio99 = float(np.quantile(var.ms, 0.99) / np.quantile(base.ms, 0.99))
            reasons.append(
                f"p99 {_pct(ratio99)} (p={p:.2g}): beyond "
                f"{pol.guard_p99_regress_pct:g}% limit"
            )
    if not reasons:
        return None
    common = _common(base, var)
    ratio = None
    if common["baseline_p50_ms"]:
        ratio = common["variant_p50_ms"] / common["baseline_p50_ms"]
    return Decision(
        "REVERT",
        Effect(ratio),
        pol.guard_confidence,
        reasons=reasons,
        policy="guardrail",
        **common,
    )


def plan_window(
    aa_baseline_ms: Latencies,
    aa_variant_ms: Latencies,
    *,
    aa_baseline_t_s: Times = None,
    aa_variant_t_s: Times = None,
    expected_improve_pct: float | None = None,
    sequential: bool = False,
    **policy: Any,
) -> WindowPlan:
    """Samples (and seconds) per arm needed to KEEP a real gain, from an A/A run.

    Two windows of the unchanged server show how much batch medians wander; the
    standard error scales as 1/sqrt(n), so the window that gives ``power`` to
    KEEP a true gain of ``expected_improve_pct`` (default twice ``improve_pct``,
    since a gain exactly at the threshold needs an infinite window) follows."""
    pol = make_policy("plan_window", policy)
    expected = expected_improve_pct or 2 * pol.improve_pct
    if not pol.improve_pct < expected < 100:
        raise ValueError(
            f"expected_improve_pct={expected:g} must lie in ({pol.improve_pct:g}, 100)"
        )
    base = load_arm("aa_baseline", aa_baseline_ms, 0, aa_baseline_t_s)
    var = load_arm("aa_variant", aa_variant_ms, 0, aa_variant_t_s)
    count = batch_count(min(base.n, var.n), pol.batches, pol.min_batch_samples)
    if count < 3:
        raise ValueError(
            f"A/A windows too short: {base.n} and {var.n} samples, need >= "
            f"{3 * pol.min_batch_samples} each"
        )
    shift = compare_p50(
        batch(base, count, 0.0), batch(var, count, float(base.n)), pol.trim, 0.0, 0.0
    )
    alpha = (1 - pol.confidence) / 2
    # A sequential design's final boundary is c = z(1 - alpha/2), not z(1 - alpha).
    z_alpha = float(special.ndtri(1 - (alpha / 2 if sequential else alpha)))
    z = z_alpha + float(special.ndtri(pol.power))
    distance = math.log(1 - pol.improve_pct / 100) - math.log(1 - expected / 100)
    n = min(base.n, var.n)
    need = n * (z * shift.se / distance) ** 2
    reasons = [
        f"A/A spread: log p50 standard error {shift.se:.4f} at {n} samples per arm"
    ]
    if pol.max_err_delta_pct > 0:
        need = max(need, z**2 / (pol.max_err_delta_pct / 100))
    if need < pol.min_samples_for_keep:
        reasons.append(f"raised to the {pol.min_samples_for_keep}-sample KEEP minimum")
        need = pol.min_samples_for_keep
    low, high = shift.interval(pol.confidence)
    aa_effect = Effect(_exp(shift.log_ratio), _exp(low), _exp(high), pol.confidence)
    if low > 0 or high < 0:
        reasons.append(
            f"A/A windows differ: p50 {_pct(aa_effect.ratio or 1)} "
            f"[{_pct(aa_effect.low or 1)}, {_pct(aa_effect.high or 1)}]; the server "
            "is not steady, so this plan is optimistic"
        )
    rate = var.rate_per_s() or base.rate_per_s()
    samples = math.ceil(need)
    return WindowPlan(
        samples,
        samples / rate if rate else None,
        pol.power,
        pol.improve_pct,
        expected,
        aa_effect,
        n,
        reasons,
    )
