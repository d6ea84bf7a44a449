"""Simulated A/B windows for smart_tui.decide: KEEP rates, samples used, speed.

A fake server produces latencies with a log-normal body, a Pareto tail, AR(1)
correlation on log latency, optional slow drift across the whole experiment and
optional neighbour CPU bursts.  Every scenario is replicated (default 1,000
times) at 60 and 600 samples per arm and judged by the seed rule, by ``decide``
as one fixed analysis, and by ``decide`` with sequential looks every 10% of the
variant window.  Prints a Markdown report.

    .venv/bin/python bench/decide_sim.py            # full run, 2 processes
    .venv/bin/python bench/decide_sim.py --reps 200 # quicker, noisier
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import signal

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from smart_tui.decide import decide, seed_rule

FloatArray = NDArray[np.float64]

WINDOW_S = 60.0  # each arm measures for a minute
SETTLE_S = 10.0  # gap between the baseline's end and the variant's start
MEDIAN_MS = 20.0
SIGMA_LOG = 0.25  # marginal spread of log latency in the body (p90/p50 ~ 1.38)
AR_PHI = 0.5  # sample-to-sample correlation of log latency
TAIL_SHARE = 0.03  # requests that hit a slow path (GC, disk, lock)
TAIL_ALPHA = 1.5  # Pareto shape of the slow path: heavy, infinite variance
BASE_5XX = 0.005
BURST_S = 15.0  # a neighbour's CPU burst covers a quarter of one window
BURST_FACTOR = 1.8
LOOKS = 10  # sequential looks at 10%, 20%, ... of the variant window


@dataclass(frozen=True)
class Scenario:
    name: str
    effect_pct: float = 0.0  # true change of every latency in the variant
    err_delta_pts: float = 0.0  # true rise of the 5xx rate, in points
    drift_pct: float = 0.0  # linear drift over the whole experiment
    burst: str = ""  # "baseline" or "variant"
    target: str = ""


SCENARIOS = [
    Scenario("no change", target="false KEEP <= 1%"),
    Scenario("true -20%", -20, target="power >= 90% at 600"),
    Scenario("true -10% (threshold)", -10, target="KEEP <= 10%"),
    Scenario("true -5%", -5, target="false KEEP <= 1%"),
    Scenario("+10% regression", 10, target="false KEEP <= 1%"),
    Scenario("-20%, 5xx +5 pt", -20, 5, target="false KEEP <= 0.5%"),
    Scenario("-20%, 5xx +1 pt", -20, 1, target="(a real win within margin)"),
    Scenario("slow drift -10% only", drift_pct=-10, target="false KEEP <= 1%"),
    Scenario("CPU burst in baseline", burst="baseline", target="false KEEP <= 1%"),
    Scenario("-20%, CPU burst in variant", -20, burst="variant", target="(report)"),
    Scenario("stress: fast drift -25% only", drift_pct=-25, target="false KEEP <= 1%"),
]
CLEAR = {"true -20%", "+10% regression", "-20%, 5xx +5 pt", "no change"}


def simulate_arm(
    rng: np.random.Generator,
    reps: int,
    n: int,
    start_s: float,
    scenario: Scenario,
    is_variant: bool,
) -> tuple[FloatArray, NDArray[np.bool_], FloatArray]:
    """Latencies (reps x n), 5xx flags and times for one arm of every replicate."""
    t_s = start_s + np.arange(n) * (WINDOW_S / n)
    innovations = rng.normal(0.0, SIGMA_LOG * np.sqrt(1 - AR_PHI**2), (reps, n))
    innovations[:, 0] = rng.normal(0.0, SIGMA_LOG, reps)  # start in equilibrium
    log_ms = signal.lfilter([1.0], [1.0, -AR_PHI], innovations, axis=1)
    log_ms += np.log(MEDIAN_MS)
    total_s = 2 * WINDOW_S + SETTLE_S
    log_ms += np.log1p(scenario.drift_pct / 100) * (t_s / total_s)
    if scenario.burst == ("variant" if is_variant else "baseline"):
        begin = rng.uniform(0, WINDOW_S - BURST_S, (reps, 1)) + start_s
        inside = (t_s >= begin) & (t_s < begin + BURST_S)
        log_ms += inside * (np.log(BURST_FACTOR) + rng.normal(0, 0.2, (reps, n)))
    ms = np.exp(log_ms)
    slow = rng.random((reps, n)) < TAIL_SHARE
    ms = np.where(slow, ms * (2 + rng.pareto(TAIL_ALPHA, (reps, n)) * 4), ms)
    if is_variant:
        ms *= 1 + scenario.effect_pct / 100
    err_rate = BASE_5XX + (scenario.err_delta_pts / 100 if is_variant else 0.0)
    errors = rng.random((reps, n)) < err_rate
    return ms, errors, np.broadcast_to(t_s, (reps, n))


def run_cell(args: tuple[int, int, int]) -> dict[str, float]:
    """All replicates of one scenario at one window size."""
    index, n, reps = args
    scenario = SCENARIOS[index]
    rng = np.random.default_rng([2026, index, n])
    bms, berr, bt = simulate_arm(rng, reps, n, 0.0, scenario, False)
    vms, verr, vt = simulate_arm(rng, reps, n, WINDOW_S + SETTLE_S, scenario, True)
    seed_keep = fixed_keep = seq_keep = seq_revert = 0
    used = 0
    looks = [max(1, round(n * k / LOOKS)) for k in range(1, LOOKS + 1)]
    for r in range(reps):
        seed = seed_rule(bms[r], vms[r], berr[r], verr[r])
        seed_keep += seed.decision == "KEEP"
        fixed = decide(
            bms[r], vms[r], berr[r], verr[r], baseline_t_s=bt[r], variant_t_s=vt[r]
        )
        fixed_keep += fixed.decision == "KEEP"
        for m in looks:
            look = decide(
                bms[r],
                vms[r, :m],
                berr[r],
                verr[r, :m],
                baseline_t_s=bt[r],
                variant_t_s=vt[r, :m],
                final=m == n,
                max_variant_samples=n,
            )
            if look.decision != "CONTINUE":
                break
        used += m
        seq_keep += look.decision == "KEEP"
        seq_revert += look.decision == "REVERT"
    return {
        "index": index,
        "n": n,
        "seed": seed_keep / reps,
        "fixed": fixed_keep / reps,
        "seq": seq_keep / reps,
        "seq_revert": seq_revert / reps,
        "used": used / reps / n,
    }


def time_decide(n: int, repeats: int) -> float:
    """Median wall time of one decide call, in ms."""
    rng = np.random.default_rng(7)
    base = rng.lognormal(np.log(MEDIAN_MS), SIGMA_LOG, n)
    var = rng.lognormal(np.log(MEDIAN_MS * 0.8), SIGMA_LOG, n)
    berr, verr = rng.random(n) < 0.005, rng.random(n) < 0.005
    t_s = np.arange(n) * 0.01
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        decide(base, var, berr, verr, baseline_t_s=t_s, variant_t_s=t_s + 1e4)
        samples.append((time.perf_counter() - start) * 1000)
    return float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    cells = [(i, n, args.reps) for n in (60, 600) for i in range(len(SCENARIOS))]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run_cell, cells))
    by_key = {(int(r["index"]), int(r["n"])): r for r in results}
    print(f"{args.reps} replicates per cell; KEEP rate in %, sequential looks every")
    print("10% of the variant window (mean samples used as % of the window).\n")
    print(
        "| scenario | target | seed@60 | stats@60 | seq@60 (used) "
        "| seed@600 | stats@600 | seq@600 (used) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for i, sc in enumerate(SCENARIOS):
        cols = []
        for n in (60, 600):
            r = by_key[(i, n)]
            cols += [
                f"{100 * r['seed']:.1f}",
                f"{100 * r['fixed']:.1f}",
                f"{100 * r['seq']:.1f} ({100 * r['used']:.0f}%)",
            ]
        print(f"| {sc.name} | {sc.target} | " + " | ".join(cols) + " |")
    print()
    print(f"decide() at 600 samples per arm: {time_decide(600, 200):.2f} ms (median)")
    print(f"decide() at 200,000 samples per arm: {time_decide(200_000, 20):.1f} ms")
    print(
        f"wall time: {time.perf_counter() - started:.0f} s with {args.jobs} processes"
    )


if __name__ == "__main__":
    main()
