"""decide, seed_rule, guardrail and plan_window: pure functions over two windows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special

from smart_tui.decide.policy import Policy, make_policy
from smart_tui.decide.result import Decision, Effect
from smart_tui.decide.stats import (
    Arm,
    FloatArray,
    Shift,
    batch,
    batch_count,
    compare_p50,
    design_effect,
    effective_counts,
    load_arm,
    look_alpha,
    rate_difference,
    tail_regression_p,
)

Latencies = Sequence[float] | FloatArray
Errors = Sequence[bool] | np.ndarray[Any, np.dtype[np.bool_]] | int
Times = Sequence[float] | FloatArray | None

# Never promise more than this many times the current window: beyond it the
# true effect is so close to the threshold that no practical window settles it.
_MAX_WINDOW_FACTOR = 100


def _exp(log_value: float) -> float:
    # Early looks with few batches can have enormous t quantiles; a ratio beyond
    # e^40 means "unbounded" just as well and keeps math.exp finite.
    return math.exp(min(max(log_value, -40.0), 40.0))


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f}%"


def _pts(value: float) -> str:
    return f"{value * 100:+.1f}"


def _level(confidence: float) -> str:
    return f"{confidence * 100:.4g}%"


def _quantiles(arm: Arm) -> list[float | None]:
    if arm.n == 0:
        return [None, None, None]
    return [float(v) for v in np.quantile(arm.ms, [0.5, 0.95, 0.99])]


def _rate_pct(arm: Arm) -> float | None:
    return 100 * arm.errors / arm.n if arm.n else None


def _common(base: Arm, var: Arm) -> dict[str, Any]:
    bq, vq = _quantiles(base), _quantiles(var)
    return {
        "samples_used": var.n,
        "baseline_samples": base.n,
        "baseline_p50_ms": bq[0],
        "baseline_p95_ms": bq[1],
        "baseline_p99_ms": bq[2],
        "variant_p50_ms": vq[0],
        "variant_p95_ms": vq[1],
        "variant_p99_ms": vq[2],
        "baseline_5xx_pct": _rate_pct(base),
        "variant_5xx_pct": _rate_pct(var),
    }


def seed_verdict(
    p50_ratio: float,
    err_delta_pts: float,
    improve_pct: float,
    max_err_delta_pct: float,
    errors_name: str = "5xx",
) -> tuple[str, list[str]]:
    """The bash rule on two point figures: KEEP iff the p50 ratio is at least
    ``improve_pct`` below 1 and errors rose by at most ``max_err_delta_pct``
    points. Shared by ``seed_rule`` and the aggregate-only measurement sources."""
    gain_ok = p50_ratio <= 1 - improve_pct / 100
    err_ok = err_delta_pts <= max_err_delta_pct
    reasons = [
        f"p50 {_pct(p50_ratio)}: {'meets' if gain_ok else 'misses'} {improve_pct:g}%",
        f"{errors_name} {err_delta_pts:+.1f} pt: {'within' if err_ok else 'beyond'} "
        f"{max_err_delta_pct:g} pt",
    ]
    return ("KEEP" if gain_ok and err_ok else "REVERT"), reasons


def seed_rule(
    baseline_ms: Latencies,
    variant_ms: Latencies,
    baseline_errors: Errors,
    variant_errors: Errors,
    *,
    improve_pct: float = 10.0,
    max_err_delta_pct: float = 2.0,
) -> Decision:
    """The original bash rule, kept for comparison: point estimates only.

    KEEP iff the variant's p50 is at least ``improve_pct`` below the baseline's
    and its 5xx rate is at most ``max_err_delta_pct`` points higher."""
    base = load_arm("baseline", baseline_ms, baseline_errors, None)
    var = load_arm("variant", variant_ms, variant_errors, None)
    common = _common(base, var)
    if base.n == 0 or var.n == 0:
        return Decision(
            "REVERT",
            Effect(None),
            None,
            var.n,
            ["no samples in one window"],
            policy="seed",
            **{k: v for k, v in common.items() if k != "samples_used"},
        )
    ratio = common["variant_p50_ms"] / max(common["baseline_p50_ms"], 1e-9)
    delta_pts = (var.errors / var.n - base.errors / base.n) * 100
    verdict, reasons = seed_verdict(ratio, delta_pts, improve_pct, max_err_delta_pct)
    return Decision(
        verdict,
        Effect(ratio),
        None,
        var.n,
        reasons,
        policy="seed",
        err_delta_pct=delta_pts,
        **{k: v for k, v in common.items() if k != "samples_used"},
    )


def decide(
    baseline_ms: Latencies,
    variant_ms: Latencies,
    baseline_errors: Errors,
    variant_errors: Errors,
    *,
    final: bool = True,
    max_variant_samples: int | None = None,
    baseline_t_s: Times = None,
    variant_t_s: Times = None,
    baseline_rps: float | None = None,
    variant_rps: float | None = None,
    **policy: Any,
) -> Decision:
    """KEEP, REVERT, INCONCLUSIVE (or CONTINUE at a non-final look) for a variant.

    ``max_variant_samples`` declares a sequential design: every look, the final
    one included, is then judged against an O'Brien-Fleming-type boundary over
    the information fraction ``len(variant_ms) / max_variant_samples``; without
    it the call is a single fixed-size analysis and must be final.  Throughput
    (``*_rps``, requests per second) is optional and only used as a guard."""
    pol = make_policy("decide", policy)
    if pol.policy == "seed":
        return seed_rule(
            baseline_ms,
            variant_ms,
            baseline_errors,
            variant_errors,
            improve_pct=pol.improve_pct,
            max_err_delta_pct=pol.max_err_delta_pct,
        )
    if not final and max_variant_samples is None:
        raise ValueError("a non-final look (final=False) needs max_variant_samples")
    if max_variant_samples is not None and max_variant_samples < 1:
        raise ValueError("max_variant_samples must be >= 1")
    base = load_arm("baseline", baseline_ms, baseline_errors, baseline_t_s)
    var = load_arm("variant", variant_ms, variant_errors, variant_t_s)
    return _Judge(
        pol, base, var, final, max_variant_samples, baseline_rps, variant_rps
    ).run()


class _Judge:
    """One stats decision; split into steps that each add reasons."""

    def __init__(
        self,
        pol: Policy,
        base: Arm,
        var: Arm,
        final: bool,
        max_variant: int | None,
        base_rps: float | None,
        var_rps: float | None,
    ) -> None:
        self.pol, self.base, self.var, self.final = pol, base, var, final
        self.fraction = None if max_variant is None else min(1.0, var.n / max_variant)
        self.base_rps, self.var_rps = base_rps, var_rps
        alpha = (1 - pol.confidence) / 2
        self.alpha = look_alpha(alpha, self.fraction, final)
        # The interval shown is the one the decision used, at the look's level.
        self.level = 1 - 2 * self.alpha
        self.log_threshold = math.log(1 - pol.improve_pct / 100)
        self.reasons: list[str] = []
        self.fields: dict[str, Any] = _common(base, var)
        self.fields["look_fraction"] = self.fraction

    def verdict(self, word: str, effect: Effect, **extra: Any) -> Decision:
        if word == "INCONCLUSIVE" and not self.final:
            word = "CONTINUE"
        return Decision(
            word,
            effect,
            self.level,
            reasons=self.reasons,
            policy="stats",
            **{**self.fields, **extra},
        )

    def run(self) -> Decision:
        pol, base, var = self.pol, self.base, self.var
        if self.fraction is not None:
            self.reasons.append(
                f"sequential look at {self.fraction:.0%} of the variant window: "
                f"one-sided level {self.alpha:.2g}"
            )
        nb = batch_count(base.n, pol.batches, pol.min_batch_samples)
        nv = batch_count(var.n, pol.batches, pol.min_batch_samples)
        if min(nb, nv) < 3:
            need = 3 * pol.min_batch_samples
            self.reasons.append(
                f"too few samples to compare: {base.n} baseline / {var.n} variant, "
                f"need >= {need} per arm (>= {pol.min_samples_for_keep} to KEEP)"
            )
            return self.verdict(
                "INCONCLUSIVE",
                Effect(self._point_ratio()),
                needed_samples=max(need, pol.min_samples_for_keep),
                needed_seconds=self._seconds(max(need, pol.min_samples_for_keep)),
            )
        start_s = float(base.n)  # without timestamps the variant follows at once
        bb = batch(base, nb, 0.0)
        vb = batch(var, nv, start_s)
        shift = compare_p50(bb, vb, pol.trim, pol.drift_alpha, pol.burst_z)
        low, high = shift.interval(self.level)
        effect = Effect(_exp(shift.log_ratio), _exp(low), _exp(high), self.level)
        p_value = shift.p_above(self.log_threshold)
        self.fields["p_value"] = p_value
        if shift.dropped:
            self.reasons.append(
                f"{shift.dropped} of {nb} baseline time batches left out as a "
                "disturbance (far slower than the rest)"
            )
        if shift.drift_per_s is not None:
            per_min = (_exp(shift.drift_per_s * 60) - 1) * 100
            self.fields["drift_pct_per_min"] = per_min
            self.reasons.append(
                f"drift {per_min:+.1f}%/min inside the windows: at least "
                f"{(_exp(shift.drift_correction) - 1) * 100:.1f}% of the apparent "
                "gain put down to it"
            )

        gain_clear = high < self.log_threshold
        loss_clear = low > self.log_threshold
        slower = effect.low is not None and effect.low > 1.0
        if gain_clear:
            word = "clears"
        elif slower:
            word = "slower than the baseline, so no gain of"
        else:
            word = "is short of" if loss_clear else "may not clear"
        self.reasons.insert(
            0,
            (
                f"p50 {_pct(effect.ratio or 1)} [{_pct(effect.low or 1)}, "
                f"{_pct(effect.high or 1)}] at {_level(self.level)}: {word} "
                f"{pol.improve_pct:g}%"
            ),
        )
        err_ok, err_bad = self._errors(bb.edges, vb.edges)
        tail_bad = self._tails()
        tput_bad = self._throughput()
        enough = min(base.n, var.n) >= pol.min_samples_for_keep
        if not enough:
            self.reasons.append(
                f"KEEP needs >= {pol.min_samples_for_keep} samples per arm, have "
                f"{min(base.n, var.n)}"
            )
        if err_bad or tail_bad or tput_bad:
            return self.verdict("REVERT", effect)
        if loss_clear and (self.final or pol.futility):
            return self.verdict("REVERT", effect)
        if gain_clear and err_ok and enough:
            return self.verdict("KEEP", effect)
        needed = self._needed(shift)
        if needed is not None:
            seconds = self._seconds(needed)
            when = f" (~{seconds:.0f} s)" if seconds is not None else ""
            self.reasons.append(
                f"a window of ~{needed} samples per arm{when} would be needed"
            )
        return self.verdict(
            "INCONCLUSIVE",
            effect,
            needed_samples=needed,
            needed_seconds=self._seconds(needed),
        )

    def _point_ratio(self) -> float | None:
        b, v = self.fields["baseline_p50_ms"], self.fields["variant_p50_ms"]
        return None if b is None or v is None or b <= 0 else float(v / b)

    def _errors(self, b_edges: Any, v_edges: Any) -> tuple[bool, bool]:
        """5xx: non-inferiority against the margin, on design-effect counts."""
        base, var, pol = self.base, self.var, self.pol
        kb, nb = base.errors, base.n
        kv, nv = var.errors, var.n
        if base.error_flags is not None and var.error_flags is not None:
            kb, nb = effective_counts(kb, nb, design_effect(base.error_flags, b_edges))
            kv, nv = effective_counts(kv, nv, design_effect(var.error_flags, v_edges))
        diff, low, high = rate_difference(kb, nb, kv, nv, self.level)
        margin = pol.max_err_delta_pct / 100
        self.fields.update(
            err_delta_pct=(var.errors / var.n - base.errors / base.n) * 100,
            err_delta_low_pct=low * 100,
            err_delta_high_pct=high * 100,
        )
        ok, bad = high < margin, low > margin
        word = "within" if ok else ("beyond" if bad else "may exceed")
        self.reasons.append(
            f"5xx {_pts(diff)} pt [{_pts(low)}, {_pts(high)}]: {word} "
            f"{pol.max_err_delta_pct:g} pt"
        )
        if base.errors == base.n and var.errors == var.n:
            self.reasons.append("every request failed in both windows")
        return ok, bad

    def _tails(self) -> bool:
        """p95/p99 guards: REVERT on a significant regression beyond the limit.

        A point estimate beyond the limit does not block KEEP: at a few hundred
        requests a p99 rests on a handful of samples and would veto real wins
        by chance (a quarter of them in the simulator)."""
        bad = False
        for q, limit, key in (
            (0.95, self.pol.max_p95_regress_pct, "p95"),
            (0.99, self.pol.max_p99_regress_pct, "p99"),
        ):
            if min(self.base.n, self.var.n) * (1 - q) < 5:
                continue  # fewer than ~5 requests beyond the quantile: no test
            b = self.fields[f"baseline_{key}_ms"]
            v = self.fields[f"variant_{key}_ms"]
            ratio = v / b if b > 0 else 1.0
            p = tail_regression_p(self.base.ms, self.var.ms, q, limit)
            beyond = p < self.alpha
            bad |= beyond
            if beyond:
                verdict = f"beyond the {limit:g}% limit (p={p:.2g})"
            elif ratio - 1 > limit / 100:
                verdict = (
                    f"above the {limit:g}% limit but not significant "
                    f"(p={p:.2g} > {self.alpha:.2g})"
                )
            else:
                verdict = f"within the {limit:g}% limit"
            self.reasons.append(f"{key} {_pct(ratio)}: {verdict}")
        return bad

    def _throughput(self) -> bool:
        if self.base_rps is None or self.var_rps is None or self.base_rps <= 0:
            return False
        drop_pct = (1 - self.var_rps / self.base_rps) * 100
        bad = drop_pct > self.pol.max_throughput_drop_pct
        self.reasons.append(
            f"throughput {-drop_pct:+.1f}%: "
            f"{'beyond' if bad else 'within'} {self.pol.max_throughput_drop_pct:g}% "
            "drop limit"
        )
        return bad

    def _needed(self, shift: Shift) -> int | None:
        """Samples per arm at which this effect would settle either way."""
        pol, n = self.pol, min(self.base.n, self.var.n)
        z = float(special.ndtri(1 - (1 - pol.confidence) / 2)) + float(
            special.ndtri(pol.power)
        )
        distance = abs(shift.log_ratio - self.log_threshold)
        factor = float(_MAX_WINDOW_FACTOR)
        if distance > 0:
            factor = min(factor, (z * shift.se / distance) ** 2)
        need = max(n * factor, float(pol.min_samples_for_keep))
        # Zero errors still need n >= z^2 / margin before the 5xx margin is shown.
        if pol.max_err_delta_pct > 0:
            need = max(need, z**2 / (pol.max_err_delta_pct / 100))
        return math.ceil(need)

    def _seconds(self, samples: int | None) -> float | None:
        rates = [r for r in (self.var.rate_per_s(), self.base.rate_per_s()) if r]
        if samples is None or not rates:
            return None
        return samples / rates[0]
