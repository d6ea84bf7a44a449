"""The statistics behind a decision, on one baseline and one variant window.

Latency is compared through time batches: each arm is cut into consecutive
batches, the median of each batch is taken on the log scale, and the arms are
compared with Welch's t-test (Yuen's trimmed test if asked) on those batch
medians.  Autocorrelation and bursts therefore show up as batch-to-batch spread
instead of being averaged away by a large sample count."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special, stats

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# Latencies of 0 ms (sub-millisecond, rounded) would give log(0); a microsecond
# floor keeps the log finite without moving any realistic median.
_FLOOR_MS = 1e-3


@dataclass(frozen=True)
class Arm:
    """One window's samples, validated and in time order."""

    ms: FloatArray
    t_s: FloatArray | None
    error_flags: BoolArray | None
    errors: int

    @property
    def n(self) -> int:
        return int(self.ms.size)

    def rate_per_s(self) -> float | None:
        """Samples per second, from the timestamps (None without them)."""
        if self.t_s is None or self.n < 2:
            return None
        span_s = float(self.t_s[-1] - self.t_s[0])
        return (self.n - 1) / span_s if span_s > 0 else None


def load_arm(
    name: str,
    ms: Sequence[float] | FloatArray,
    errors: Sequence[bool] | BoolArray | int,
    t_s: Sequence[float] | FloatArray | None,
) -> Arm:
    """Validate one arm; raise ValueError naming the arm on bad input."""
    lat = np.asarray(ms, dtype=np.float64).ravel()
    if lat.size and (not np.all(np.isfinite(lat)) or float(lat.min()) < 0):
        raise ValueError(f"{name}_ms must be finite latencies >= 0 ms")
    times: FloatArray | None = None
    if t_s is not None:
        times = np.asarray(t_s, dtype=np.float64).ravel()
        if times.size != lat.size or not np.all(np.isfinite(times)):
            raise ValueError(f"{name}_t_s must hold one finite time per sample")
    flags: BoolArray | None = None
    if isinstance(errors, int | np.integer) and not isinstance(errors, bool):
        count = int(errors)
        if not 0 <= count <= lat.size:
            raise ValueError(f"{name}_errors={count} is not within 0..{lat.size}")
    else:
        flags = np.asarray(errors, dtype=bool).ravel()
        if flags.size != lat.size:
            raise ValueError(
                f"{name}_errors has {flags.size} flags for {lat.size} samples"
            )
        count = int(flags.sum())
    if times is not None and times.size > 1 and np.any(np.diff(times) < 0):
        # The contract is time order; tolerate a shuffled input by sorting.
        order = np.argsort(times, kind="stable")
        lat, times = lat[order], times[order]
        flags = flags[order] if flags is not None else None
    return Arm(lat, times, flags, count)


@dataclass(frozen=True)
class Batches:
    edges: NDArray[np.intp]
    log_medians: FloatArray
    centres_s: FloatArray


def batch(arm: Arm, count: int, start_s: float) -> Batches:
    """Cut the arm into ``count`` consecutive batches of (nearly) equal size.

    The first ``n % count`` batches hold one sample more, so the medians take
    two vectorised calls.  Without timestamps, sample k sits at ``start_s + k``
    (evenly spaced)."""
    size, longer = divmod(arm.n, count)
    split = longer * (size + 1)
    parts = (
        [np.median(arm.ms[:split].reshape(longer, size + 1), axis=1)] if longer else []
    )
    parts.append(np.median(arm.ms[split:].reshape(count - longer, size), axis=1))
    meds = np.concatenate(parts)
    sizes = np.full(count, size)
    sizes[:longer] += 1
    edges = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
    times = arm.t_s if arm.t_s is not None else start_s + np.arange(arm.n, dtype=float)
    centres = np.add.reduceat(times, edges[:-1]) / sizes
    return Batches(edges, np.log(np.maximum(meds, _FLOOR_MS)), centres)


def batch_count(n: int, max_batches: int, min_batch_samples: int) -> int:
    return min(max_batches, n // min_batch_samples)


@dataclass(frozen=True)
class Shift:
    """Log p50 ratio variant/baseline as estimate, standard error and df."""

    log_ratio: float
    se: float
    df: float
    drift_per_s: float | None = None  # log-latency slope used for the correction
    dropped: int = 0  # baseline batches left out as a disturbance
    drift_correction: float = 0.0  # added to log_ratio for a proven drift

    def interval(self, confidence: float) -> tuple[float, float]:
        half = self.se * _t_quantile(self.df, 0.5 + confidence / 2)
        return self.log_ratio - half, self.log_ratio + half

    def p_above(self, log_threshold: float) -> float:
        """One-sided p-value of H0: log ratio >= threshold (no sufficient gain)."""
        if self.se == 0:
            return 0.0 if self.log_ratio < log_threshold else 1.0
        score = (self.log_ratio - log_threshold) / self.se
        return (
            float(special.stdtr(self.df, score))
            if math.isfinite(self.df)
            else float(special.ndtr(score))
        )

    def z_score(self, log_threshold: float) -> float:
        """Evidence for a gain beyond the threshold on the normal scale."""
        p = self.p_above(log_threshold)
        return float(-special.ndtri(min(max(p, 1e-300), 1 - 1e-16)))


def _t_quantile(df: float, q: float) -> float:
    if not math.isfinite(df):
        return float(special.ndtri(q))
    return float(special.stdtrit(df, q))


def drop_disturbed(arm: Batches, other: Batches, z: float) -> tuple[Batches, int]:
    """Leave out batches far slower than the rest of the arm (a CPU burst).

    Only ever applied to the baseline: a slow stretch there makes any variant
    look better, while removing one from the variant could hide a variant that
    stalls.  A burst rarely starts on a batch edge, so slower-than-typical
    neighbours of a flagged batch go too.  At most 40% of the batches go; beyond
    that nobody can say which part of the window was normal.  The spread comes
    from the calmer arm, since a burst inflates its own arm's MAD; a too small
    spread only drops more baseline batches, which never favours KEEP."""
    y = arm.log_medians
    scale = min(
        float(stats.median_abs_deviation(y, scale="normal")),
        float(stats.median_abs_deviation(other.log_medians, scale="normal")),
    )
    if z <= 0 or scale <= 0:
        return arm, 0
    centre = float(np.median(y))
    slow = y > centre + z * scale
    if not slow.any():
        return arm, 0
    near = np.zeros_like(slow)
    near[1:] |= slow[:-1]
    near[:-1] |= slow[1:]
    slow |= near & (y > centre + z / 2 * scale)
    dropped = int(slow.sum())
    if dropped > 0.4 * y.size:
        return arm, 0
    keep = ~slow
    return Batches(arm.edges, y[keep], arm.centres_s[keep]), dropped


def compare_p50(
    base: Batches, var: Batches, trim: float, drift_alpha: float, burst_z: float
) -> Shift:
    """Welch (or Yuen, with trim) comparison of batch log-medians, with drift.

    Baseline and variant windows follow each other in time, so a drift of the
    server between them looks like an effect.  The pooled within-window slope
    (Theil-Sen, robust to a burst) estimates that drift; when it is significantly
    negative (the server getting faster, which flatters the later variant) the
    effect is moved by the slope's confidence bound x the gap between the
    windows, the least drift the data support.  A rising trend is left alone:
    it only biases against KEEP, and "correcting" it would turn a burst late in
    the baseline into a false win."""
    base, dropped = drop_disturbed(base, var, burst_z)
    yb, yv = base.log_medians, var.log_medians
    if np.ptp(yb) == 0 and np.ptp(yv) == 0:
        # Constant batch medians (e.g. a quantised timer): the data are exact.
        return Shift(float(yv[0] - yb[0]), 0.0, math.inf, dropped=dropped)
    with warnings.catch_warnings():
        # One constant arm is legitimate here (every request timed out); scipy
        # warns about precision, but the other arm's spread carries the test.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(yv, yb, equal_var=False, trim=trim)
    df = float(result.df)
    if math.isfinite(float(result.statistic)):
        # The interval is symmetric around the (trimmed) mean difference.
        ci = result.confidence_interval(0.95)
        estimate = float(ci.high + ci.low) / 2
        se = float(ci.high - ci.low) / (2 * _t_quantile(df, 0.975))
    else:
        # Both arms' batch medians are constant: no spread to measure.
        estimate = float(stats.trim_mean(yv, trim) - stats.trim_mean(yb, trim))
        se, df = 0.0, math.inf
    shift = Shift(estimate, abs(se), df if df > 0 else math.inf, dropped=dropped)
    if drift_alpha <= 0:
        return shift
    return _drift_corrected(shift, base, var, drift_alpha)


def _drift_corrected(
    shift: Shift, base: Batches, var: Batches, drift_alpha: float
) -> Shift:
    tc = np.concatenate(
        [base.centres_s - base.centres_s.mean(), var.centres_s - var.centres_s.mean()]
    )
    yc = np.concatenate(
        [
            base.log_medians - base.log_medians.mean(),
            var.log_medians - var.log_medians.mean(),
        ]
    )
    if np.ptp(tc) <= 0 or np.ptp(yc) <= 0 or yc.size < 6:
        return shift
    # high = one-sided upper confidence bound of the slope at 1 - drift_alpha.
    fit = stats.theilslopes(yc, tc, alpha=1 - 2 * drift_alpha)
    high = float(fit.high_slope)
    if not high < 0:  # also when the bound is NaN
        return shift
    gap_s = float(var.centres_s.mean() - base.centres_s.mean())
    # Subtract only the drift the data prove (the bound nearest zero), not the
    # point slope: extrapolating a noisy slope over the gap would swamp the
    # interval, and a spurious trigger in a steady run then costs almost nothing.
    correction = -high * gap_s
    return Shift(
        shift.log_ratio + correction,
        shift.se,
        shift.df,
        float(fit.slope),
        shift.dropped,
        correction,
    )


def design_effect(flags: BoolArray, edges: NDArray[np.intp]) -> float:
    """Variance inflation of a count from clustering in time (>= 1).

    Errors come in bursts; the batch-to-batch spread of the error rate, against
    the binomial spread, tells how many independent requests the count is worth.
    Applied only when that overdispersion is significant (chi-square dispersion
    test at 5%): a noisy ratio clipped at 1 would otherwise always inflate."""
    counts = np.add.reduceat(flags.astype(np.float64), edges[:-1])
    sizes = np.diff(edges).astype(np.float64)
    if counts.size < 3 or float(sizes.min()) <= 0:
        return 1.0
    p = float(counts.sum() / sizes.sum())
    if p <= 0 or p >= 1:
        return 1.0
    expected = sizes * p
    dispersion = float(np.sum((counts - expected) ** 2 / (expected * (1 - p))))
    dof = counts.size - 1
    if float(stats.chi2.sf(dispersion, dof)) >= 0.05:
        return 1.0
    return max(1.0, dispersion / dof)


def effective_counts(k: int, n: int, deff: float) -> tuple[int, int]:
    n_eff = max(1, round(n / deff))
    return min(n_eff, round(k / deff)), n_eff


def rate_difference(
    kb: int, nb: int, kv: int, nv: int, confidence: float
) -> tuple[float, float, float]:
    """Newcombe's hybrid score interval for p_variant - p_baseline.

    Built from the two Wilson score intervals scipy gives, so it stays sane at
    zero errors, where the plain Wald interval collapses to a point."""
    pb, pv = kb / nb, kv / nv
    lb, ub = _wilson(kb, nb, confidence)
    lv, uv = _wilson(kv, nv, confidence)
    diff = pv - pb
    low = diff - math.hypot(pv - lv, ub - pb)
    high = diff + math.hypot(uv - pv, pb - lb)
    return diff, low, high


def _wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided Wilson interval as two one-sided bounds: same numbers, but
    scipy then skips the costly two-sided p-value search (5x faster)."""
    one_sided = 0.5 + confidence / 2
    upper = stats.binomtest(k, n, alternative="less").proportion_ci(
        one_sided, method="wilson"
    )
    lower = stats.binomtest(k, n, alternative="greater").proportion_ci(
        one_sided, method="wilson"
    )
    return float(lower.low), float(upper.high)


def tail_regression_p(
    base_ms: FloatArray, var_ms: FloatArray, q: float, limit_pct: float
) -> float:
    """One-sided p-value of "variant's q-quantile > (1 + limit) x baseline's".

    Two-sample quantile test: divide the variant by (1 + limit), take the
    q-quantile of both arms pooled, and compare how many requests of each arm lie
    above it with Fisher's exact test.  Unlike comparing with the baseline's
    quantile as if it were exact, this carries the noise of both tails."""
    scaled = var_ms / (1 + limit_pct / 100)
    cut = float(np.quantile(np.concatenate([base_ms, scaled]), q))
    # ">=": stalls or timeouts often share one value, which can be the cut.
    kb = int(np.count_nonzero(base_ms >= cut))
    kv = int(np.count_nonzero(scaled >= cut))
    table = [[kv, scaled.size - kv], [kb, base_ms.size - kb]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def look_alpha(alpha: float, fraction: float | None, final: bool) -> float:
    """One-sided nominal level for this look (O'Brien-Fleming-type spending).

    Lan-DeMets' O'Brien-Fleming spending function, alpha(t) = 2 - 2 Phi(c /
    sqrt(t)) with c = z(1 - alpha/2), is exactly the chance that a Brownian
    motion crosses the boundary Z_t >= c / sqrt(t) by time t.  Using that
    boundary at every look keeps the total false-KEEP rate under alpha however
    often the caller looks, without remembering earlier looks.  The final look
    of a sequential design uses c; a fixed design (no max) uses alpha itself."""
    if fraction is None:
        return alpha
    c = float(special.ndtri(1 - alpha / 2))
    z = c if final else c / math.sqrt(max(fraction, 1e-9))
    return float(special.ndtr(-z))
