"""Judging windows that have only aggregates (a script's JSON object, wrk's report).

``decide`` needs per-request samples for its confidence test, so such windows fall
back to the seed rule, which reads only point figures: KEEP iff the variant's p50 is
at least ``improve_pct`` below the baseline's and its error share rose by at most
``max_err_delta_pct`` points. No interval, no tail guard; the reasons say so."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from smart_tui.decide import Decision, Effect
from smart_tui.decide.core import seed_verdict
from smart_tui.records import Samples
from smart_tui.sources.window import Aggregates


def _from_samples(samples: Samples) -> Aggregates | None:
    if not samples.latencies_ms.size:
        return None
    p50, p95, p99 = np.percentile(samples.latencies_ms, [50, 95, 99]).tolist()
    return Aggregates(
        requests=int(samples.latencies_ms.size),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        status_5xx=int(samples.errors.sum()),
    )


def _pool(blocks: Sequence[Aggregates]) -> Aggregates | None:
    """One arm from its windows; with several (switchback), each percentile is the
    request-weighted mean of the windows' (an approximation, said in the reasons)."""
    if len(blocks) <= 1:
        return blocks[0] if blocks else None
    requests = sum(block.requests for block in blocks)

    def mean(name: str) -> float | None:
        values = [getattr(block, name) for block in blocks]
        if any(value is None for value in values):
            return None
        weighted = sum(v * b.requests for v, b in zip(values, blocks, strict=True))
        return float(weighted / requests)

    return Aggregates(
        requests=requests,
        p50_ms=mean("p50_ms") or 0.0,
        p95_ms=mean("p95_ms"),
        p99_ms=mean("p99_ms"),
        status_5xx=sum(block.status_5xx for block in blocks),
        conn_errors=sum(block.conn_errors for block in blocks),
        timeouts=sum(block.timeouts for block in blocks),
    )


def aggregate_decision(
    base: Samples,
    cand: Samples,
    base_windows: Sequence[Aggregates],
    cand_windows: Sequence[Aggregates],
    *,
    source: str,
    policy: Mapping[str, Any],
) -> Decision | None:
    """The seed rule when either arm has aggregate-only windows, else None (judge
    with ``decide``). An arm's samples, if any, are summed up beside its windows.
    ``policy`` holds ``improve_pct`` and ``max_err_delta_pct``."""
    if not base_windows and not cand_windows:
        return None
    why = [
        f"seed rule on window aggregates: the {source} source gave no per-request "
        "samples, so the confidence test cannot run"
    ]
    arms = []
    for samples, windows in ((base, base_windows), (cand, cand_windows)):
        from_samples = _from_samples(samples)
        blocks = [*windows, *([from_samples] if from_samples else [])]
        if len(blocks) > 1:
            why.append(
                f"{len(blocks)} windows pooled: percentiles are request-weighted means"
            )
        arms.append(_pool(blocks))
    base_arm, var_arm = arms
    if base_arm is None or var_arm is None:
        reasons = ["no requests in one window", *why]
        return Decision("REVERT", Effect(None), None, 0, reasons, policy="seed")

    improve_pct = float(policy.get("improve_pct", 10.0))
    max_err_delta_pct = float(policy.get("max_err_delta_pct", 2.0))
    ratio = var_arm.p50_ms / max(base_arm.p50_ms, 1e-9)
    base_err_pct = 100 * base_arm.errors / base_arm.requests
    var_err_pct = 100 * var_arm.errors / var_arm.requests
    delta_pts = var_err_pct - base_err_pct
    verdict, reasons = seed_verdict(
        ratio, delta_pts, improve_pct, max_err_delta_pct, errors_name="errors"
    )
    return Decision(
        verdict,
        Effect(ratio),
        None,
        var_arm.requests,
        [*reasons, *why],
        policy="seed",
        baseline_samples=base_arm.requests,
        baseline_p50_ms=base_arm.p50_ms,
        baseline_p95_ms=base_arm.p95_ms,
        baseline_p99_ms=base_arm.p99_ms,
        variant_p50_ms=var_arm.p50_ms,
        variant_p95_ms=var_arm.p95_ms,
        variant_p99_ms=var_arm.p99_ms,
        baseline_5xx_pct=base_err_pct,
        variant_5xx_pct=var_err_pct,
        err_delta_pct=delta_pts,
    )
