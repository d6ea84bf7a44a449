"""Behaviour of smart_tui.decide on small hand-made windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smart_tui.decide import (
    POLICY_DEFAULTS,
    Decision,
    decide,
    guardrail,
    plan_window,
    seed_rule,
)

N = 600


def lognormal(seed: int, n: int = N, median_ms: float = 20.0, sigma: float = 0.2):
    return np.random.default_rng(seed).lognormal(np.log(median_ms), sigma, n)


def no_errors(n: int = N) -> np.ndarray:
    return np.zeros(n, dtype=bool)


def errors_at(rate: float, n: int = N) -> np.ndarray:
    """Evenly spread failures, so the count is exact and not bursty."""
    flags = np.zeros(n, dtype=bool)
    k = round(rate * n)
    if k:
        flags[np.linspace(0, n - 1, k).astype(int)] = True
    return flags


def times(n: int = N, start_s: float = 0.0, rate_per_s: float = 10.0):
    return start_s + np.arange(n) / rate_per_s


def clear_win():
    return lognormal(1), lognormal(2, median_ms=10.0)


def test_clear_half_latency_is_kept_with_the_reason():
    base, var = clear_win()
    result = decide(base, var, no_errors(), no_errors())
    assert result.decision == "KEEP"
    assert result.effect.high is not None and result.effect.high < 0.9
    assert 0.45 < (result.effect.ratio or 0) < 0.55
    assert "clears 10%" in result.reasons[0]
    assert any(r.startswith("5xx") and "within 2 pt" in r for r in result.reasons)


def test_clear_regression_is_reverted():
    result = decide(
        lognormal(3), lognormal(4, median_ms=26.0), no_errors(), no_errors()
    )
    assert result.decision == "REVERT"
    assert "slower than the baseline, so no gain of 10%" in result.reasons[0]


def test_identical_arms_are_reverted_not_kept():
    base = lognormal(5)
    result = decide(base, base.copy(), no_errors(), no_errors())
    assert result.decision == "REVERT"
    assert result.effect.ratio == pytest.approx(1.0)


def test_constant_series():
    same = decide(np.full(N, 20.0), np.full(N, 20.0), no_errors(), no_errors())
    assert same.decision == "REVERT"
    halved = decide(np.full(N, 20.0), np.full(N, 10.0), no_errors(), no_errors())
    assert halved.decision == "KEEP"
    assert halved.effect.ratio == pytest.approx(0.5)


def test_all_requests_failing():
    timeouts = np.full(N, 5000.0)
    both = decide(timeouts, timeouts, np.ones(N, bool), np.ones(N, bool))
    assert both.decision != "KEEP"
    assert any("every request failed" in r for r in both.reasons)
    only_variant = decide(lognormal(6), timeouts, no_errors(), np.ones(N, bool))
    assert only_variant.decision == "REVERT"
    assert any(r.startswith("5xx") and "beyond" in r for r in only_variant.reasons)


def test_too_few_samples_is_inconclusive_with_a_needed_size():
    base, var = lognormal(7, n=20), lognormal(8, n=20, median_ms=10.0)
    result = decide(base, var, no_errors(20), no_errors(20))
    assert result.decision == "INCONCLUSIVE"
    assert result.needed_samples is not None and result.needed_samples >= 200
    assert "too few samples" in result.reasons[0]


def test_no_keep_below_the_minimum_even_for_a_clear_win():
    n = 120
    result = decide(
        lognormal(9, n=n),
        lognormal(10, n=n, median_ms=10.0),
        no_errors(n),
        no_errors(n),
        baseline_t_s=times(n),
        variant_t_s=times(n, 100.0),
    )
    assert result.decision == "INCONCLUSIVE"
    assert any("KEEP needs >= 200" in r for r in result.reasons)
    assert result.needed_seconds is not None and result.needed_seconds > 0


def test_five_xx_rise_beyond_margin_reverts_even_with_faster_p50():
    base, var = clear_win()
    result = decide(base, var, errors_at(0.005), errors_at(0.10))
    assert result.decision == "REVERT"
    reason = next(r for r in result.reasons if r.startswith("5xx"))
    assert "beyond 2 pt" in reason
    assert result.err_delta_low_pct is not None and result.err_delta_low_pct > 2


def test_error_count_as_int_is_accepted():
    base, var = clear_win()
    flags = decide(base, var, errors_at(0.01), errors_at(0.01))
    count = decide(base, var, 6, 6)
    assert count.decision == flags.decision == "KEEP"
    assert count.variant_5xx_pct == pytest.approx(1.0)


def test_burst_in_baseline_does_not_make_a_false_keep():
    base = lognormal(11)
    base[300:480] *= 2.5  # 30% of the window under a neighbour's CPU burst
    var = lognormal(12)  # the variant changes nothing
    assert seed_rule(base, var, no_errors(), no_errors()).decision == "KEEP"
    result = decide(base, var, no_errors(), no_errors())
    assert result.decision != "KEEP"
    assert any("baseline time batches left out" in r for r in result.reasons)


def test_falling_drift_across_windows_does_not_make_a_false_keep():
    # The server gets 30% faster over the experiment; the variant changes nothing.
    t_b, t_v = times(), times(start_s=70.0)
    drift = np.log(0.7) / 130.0
    rng = np.random.default_rng(13)
    base = 20 * np.exp(drift * t_b + rng.normal(0, 0.05, N))
    var = 20 * np.exp(drift * t_v + rng.normal(0, 0.05, N))
    result = decide(
        base, var, no_errors(), no_errors(), baseline_t_s=t_b, variant_t_s=t_v
    )
    assert seed_rule(base, var, no_errors(), no_errors()).decision == "KEEP"
    assert result.decision != "KEEP"
    assert any(r.startswith("drift") for r in result.reasons)


def test_more_correlated_samples_do_not_make_it_overconfident():
    # A slowly wandering server (AR(1), phi = 0.995) and no change: 20,000 samples
    # per arm hold little more information than a few hundred independent ones.
    keeps = 0
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        walk = np.empty(40_000)
        walk[0] = 0.0
        noise = rng.normal(0, 0.3 * np.sqrt(1 - 0.995**2), walk.size)
        for i in range(1, walk.size):
            walk[i] = 0.995 * walk[i - 1] + noise[i]
        ms = 20 * np.exp(walk)
        result = decide(ms[:20_000], ms[20_000:], 0, 0)
        keeps += result.decision == "KEEP"
        low, high = result.effect.low or 0, result.effect.high or 0
        assert high - low > 0.01, "interval collapsed despite autocorrelation"
    assert keeps == 0


def test_sequential_look_stops_early_on_a_clear_win():
    n = 1000
    base, var = lognormal(1, n=n), lognormal(2, n=n, median_ms=10.0)
    early = decide(
        base, var, no_errors(n), no_errors(n), final=False, max_variant_samples=2000
    )
    assert early.decision == "KEEP"
    assert early.look_fraction == pytest.approx(0.5)
    # The look spends less alpha than a fixed analysis: a wider interval.
    assert early.confidence is not None and early.confidence > 0.99


def test_sequential_look_does_not_keep_before_5xx_can_be_judged():
    base, var = clear_win()
    early = decide(
        base,
        var[:300],
        no_errors(),
        no_errors(300),
        final=False,
        max_variant_samples=1200,
    )
    assert early.decision == "CONTINUE"
    assert any(r.startswith("5xx") and "may exceed" in r for r in early.reasons)


def test_sequential_look_continues_when_ambiguous():
    base, var = lognormal(14), lognormal(15, median_ms=18.0)  # exactly -10%
    look = decide(
        base,
        var[:200],
        no_errors(),
        no_errors(200),
        final=False,
        max_variant_samples=2000,
    )
    assert look.decision == "CONTINUE"


def test_non_final_look_needs_a_planned_maximum():
    base, var = clear_win()
    with pytest.raises(ValueError, match="max_variant_samples"):
        decide(base, var, no_errors(), no_errors(), final=False)


def test_guardrail_trips_on_5xx_connection_errors_and_p99():
    base, var = lognormal(16), lognormal(17)
    assert guardrail(base, var, no_errors(), no_errors()) is None
    tripped = guardrail(base, var, no_errors(), errors_at(0.2))
    assert isinstance(tripped, Decision)
    assert tripped.decision == "REVERT"
    assert any(r.startswith("5xx") for r in tripped.reasons)
    refused = guardrail(base, var, no_errors(), no_errors(), variant_conn_errors=90)
    assert refused is not None
    assert any(r.startswith("connection errors") for r in refused.reasons)
    stalls = var.copy()
    stalls[::25] = 2000.0  # 4% of requests stall for two seconds
    slow = guardrail(base, stalls, no_errors(), no_errors())
    assert slow is not None and any(r.startswith("p99") for r in slow.reasons)


def test_guardrail_waits_for_enough_samples():
    assert guardrail(lognormal(18, n=10), np.full(10, 9e3), 0, 10) is None


def test_result_reads_as_a_mapping_and_serialises():
    base, var = clear_win()
    result = decide(base, var, no_errors(), no_errors())
    assert result["decision"] == "KEEP"
    assert result["effect"]["ratio"] == result.effect.ratio
    assert {"decision", "effect", "confidence", "samples_used", "reasons"} <= set(
        result.keys()
    )
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["effect"]["low"] < data["effect"]["high"]
    assert data["samples_used"] == N
    assert data["baseline_p99_ms"] > data["baseline_p50_ms"]
    with pytest.raises(KeyError):
        result["no_such_field"]


def test_same_inputs_give_the_same_decision():
    base, var = lognormal(19), lognormal(20, median_ms=17.0)
    first = decide(list(base), list(var), list(errors_at(0.01)), 3)
    second = decide(base, var, errors_at(0.01), 3)
    assert first.to_dict() == second.to_dict()


def test_seed_policy_keeps_on_point_estimates():
    base = lognormal(21, n=60)
    var = base * 0.85
    assert decide(base, var, 0, 0, policy="seed").decision == "KEEP"
    assert decide(base, var, 0, 0).decision != "KEEP"  # 60 samples prove nothing
    beyond = seed_rule(base, var, 0, 2)  # +3.3 points of 5xx
    assert beyond.decision == "REVERT"
    assert "beyond 2 pt" in beyond.reasons[1]
    assert seed_rule(base, base * 0.95, 0, 0).decision == "REVERT"


def test_unknown_policy_key_is_rejected_by_name():
    base, var = clear_win()
    with pytest.raises(TypeError, match="improve_pcnt"):
        decide(base, var, 0, 0, improve_pcnt=5)
    with pytest.raises(ValueError, match="confidence"):
        decide(base, var, 0, 0, confidence=1.5)
    assert POLICY_DEFAULTS["improve_pct"] == 10.0
    assert POLICY_DEFAULTS["max_err_delta_pct"] == 2.0
    assert POLICY_DEFAULTS["confidence"] == 0.95


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="variant_errors"):
        decide(lognormal(22), lognormal(23), no_errors(), no_errors(N - 1))
    with pytest.raises(ValueError, match="baseline_ms"):
        decide([1.0, float("nan")], [1.0, 2.0], 0, 0)


def test_plan_window_grows_with_noise_and_reports_seconds():
    quiet = plan_window(
        lognormal(24, sigma=0.1),
        lognormal(25, sigma=0.1),
        aa_baseline_t_s=times(),
        aa_variant_t_s=times(start_s=70.0),
    )
    noisy = plan_window(lognormal(26, sigma=0.6), lognormal(27, sigma=0.6), power=0.95)
    assert quiet.samples_per_arm >= 200
    assert noisy.samples_per_arm > quiet.samples_per_arm
    assert quiet.seconds_per_arm == pytest.approx(quiet.samples_per_arm / 10.0)
    assert noisy.seconds_per_arm is None
    assert quiet["aa_effect"]["low"] < 1 < quiet["aa_effect"]["high"]
