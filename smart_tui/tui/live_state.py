"""The state of the run on the Live screen, fed by the app's own run (observer
messages) or rebuilt from the database for a run the timer started. Plain data and
functions: the screen reads it on a throttled timer and only draws."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from smart_tui.storage import RunRow, Store

MEASURING_PHASES = ("baseline", "measure")


@dataclass
class VariantVerdict:
    variant: str
    decision: str
    reasons: list[str]


@dataclass
class LiveState:
    """One run as the Live screen sees it; ``version`` grows with every change so
    the screen redraws only when something moved."""

    run_id: str = ""
    experiment_id: str = ""
    source: str = "app"  # app: started here; timer: read from the database
    phase: str = ""
    variant: str = ""
    phase_started_s: float = 0.0  # time.monotonic() (app) or epoch seconds (timer)
    planned_s: float = 0.0
    seconds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    verdicts: list[VariantVerdict] = field(default_factory=list)
    ended: str = ""
    max_err_delta_pct: float = 2.0
    version: int = 0

    @property
    def active(self) -> bool:
        return bool(self.experiment_id) and not self.ended

    def begin_phase(
        self, name: str, variant: str, planned_s: float, now: float
    ) -> None:
        self.phase, self.variant = name, variant
        self.planned_s, self.phase_started_s = planned_s, now
        self.version += 1

    def add_second(self, role: str, variant: str, stats: dict[str, Any]) -> None:
        self.seconds.setdefault(f"{role} {variant}", []).append(stats)
        self.version += 1

    def add_verdict(self, variant: str, decision: str, reasons: list[str]) -> None:
        self.verdicts.append(VariantVerdict(variant, decision, list(reasons)))
        self.version += 1

    def end(self, text: str) -> None:
        self.ended = text
        self.version += 1

    # What the screen draws

    def progress(self, now: float) -> tuple[float, float]:
        """(elapsed, planned) seconds of the current phase; planned 0 = unknown."""
        return max(now - self.phase_started_s, 0.0), self.planned_s

    def latest(self) -> dict[str, Any] | None:
        """The newest whole second: a window that ends early (a stop, a sequential
        answer) leaves a last second holding a fraction of the planned requests,
        whose rate would read as nonsense next to the intended one."""
        for stats_list in reversed(list(self.seconds.values())):
            if not stats_list:
                continue
            latest: dict[str, Any] = stats_list[-1]
            if len(stats_list) > 1:
                before: dict[str, Any] = stats_list[-2]
                if (latest.get("intended") or 0) < 0.5 * (before.get("intended") or 0):
                    return before
            return latest
        return None

    def chart_series(self) -> dict[str, list[float | None]]:
        """p50 and p99 per second of every window so far, keyed by a legend label."""
        series: dict[str, list[float | None]] = {}
        for key, stats_list in self.seconds.items():
            role, _, variant = key.partition(" ")
            label = variant if role == "variant" else role
            for figure in ("p50_ms", "p99_ms"):
                series[f"{label} {figure[:3]}"] = [
                    stats.get(figure) for stats in stats_list
                ]
        return series

    def guardrail(self) -> str:
        """The error guardrail in words: the variant's error rate against the
        baseline's plus MAX_ERR_DELTA_PCT, as the decision will judge it."""
        baseline = _error_pct(
            [
                s
                for key, rows in self.seconds.items()
                if key.startswith("baseline")
                for s in rows
            ]
        )
        current = _error_pct(
            [
                s
                for key, rows in self.seconds.items()
                if key.startswith("variant")
                for s in rows
            ]
        )
        if baseline is None:
            return "guardrail: waiting for the baseline"
        if current is None:
            return f"guardrail: baseline errors {baseline:.2f}%"
        limit = baseline + self.max_err_delta_pct
        state = "ok" if current <= limit else "BREACHED"
        return f"guardrail {state}: errors {current:.2f}% (limit {limit:.2f}%)"


def _error_pct(rows: list[dict[str, Any]]) -> float | None:
    sent = sum(int(row.get("sent") or row.get("intended") or 0) for row in rows)
    if not sent:
        return None
    failed = sum(
        int(row.get("status_5xx") or 0)
        + int(row.get("conn_errors") or 0)
        + int(row.get("timeouts") or 0)
        for row in rows
    )
    return 100.0 * failed / sent


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return datetime.fromisoformat(stamp).astimezone(UTC).timestamp()


def planned_seconds(settings_shown: dict[str, str], phase: str) -> float:
    """A phase's planned length from the run's recorded settings (0 = unknown)."""

    def number(key: str) -> float:
        try:
            return float(settings_shown.get(key, "0"))
        except ValueError:
            return 0.0

    warmup = number("WARMUP_SECONDS")
    return {
        "baseline": number("BASELINE_SECONDS") + warmup,
        "measure": number("EXPERIMENT_SECONDS") + warmup,
        "settle": number("SETTLE_SECONDS"),
        "cooldown": number("COOLDOWN_SECONDS"),
    }.get(phase, 0.0)


def from_database(store: Store, run: RunRow) -> LiveState:
    """A run started elsewhere (the timer), as far as the database knows it.

    Per-second figures are stored when a window ends, so the chart fills window by
    window; the phase and its time left are live."""
    state = LiveState(run_id=run.id, experiment_id=run.experiment_id, source="timer")
    row = store.db.execute(
        "select settings from runs where id = ?", [run.id]
    ).fetchone()
    settings_shown = json.loads(row[0]) if row and row[0] else {}
    phases = store.phases(run.id)
    if phases:
        last = phases[-1]
        state.begin_phase(
            last["name"],
            last["variant"] or "",
            planned_seconds(settings_shown, last["name"]),
            _epoch(last["started_at"]),
        )
    for window in store.windows(run.id):
        for stats in store.seconds(window["id"]):
            state.add_second(window["role"], window["variant"], stats)
    for decision in store.decisions(run.id):
        state.add_verdict(
            decision["variant"], decision["decision"], decision["reasons"]
        )
    if run.status != "running":
        state.end(f"{run.outcome or run.status}")
    return state
