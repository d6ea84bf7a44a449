"""Decide whether an nginx config variant beat the baseline: pure functions only.

``decide`` returns KEEP only when the p50 ratio's confidence bound clears
``improve_pct``, 5xx is shown non-inferior within ``max_err_delta_pct`` and the
tail/throughput guards hold; REVERT on a clear loss or a guard; INCONCLUSIVE (or
CONTINUE at a non-final sequential look) otherwise.  No I/O, clock or randomness:
the same inputs always give the same ``Decision``."""

from smart_tui.decide.core import decide, seed_rule
from smart_tui.decide.guard import guardrail, plan_window
from smart_tui.decide.policy import POLICY_DEFAULTS, Policy
from smart_tui.decide.result import Decision, Effect, WindowPlan

__all__ = [
    "POLICY_DEFAULTS",
    "Decision",
    "Effect",
    "Policy",
    "WindowPlan",
    "decide",
    "guardrail",
    "plan_window",
    "seed_rule",
]
