"""What the runner calls to talk to the outside world, once the server is back on
baseline or the kept variant: ``after_run`` (ask the coach if COACH_WHEN says so,
store the advice, notify) and ``notify_event`` (an event mid-run). Neither raises,
and each ends within ``max_after_run_seconds`` / NOTIFY_TIMEOUT_SECONDS: a coach or
webhook that is slow, down or answers garbage never changes what the run did."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from smart_tui.coach import document as coach_document
from smart_tui.coach.advice import AdviceRejected
from smart_tui.coach.client import CoachAnswer, ask_coach, endpoint_of, secrets_of
from smart_tui.coach.records import StoredAdvice, new_advice, save_advice
from smart_tui.coach.wire import Deadline, Scrubber, register_secrets
from smart_tui.errors import ConfigError, NothingToDo, SmartError
from smart_tui.experiments import Experiment
from smart_tui.notify import (
    DEFAULT_SEVERITY,
    Delivery,
    Event,
    EventKind,
    Severity,
    deliver,
    targets_of,
)
from smart_tui.settings import Settings
from smart_tui.storage import Store

log = logging.getLogger("smart_tui.outreach")

# Beyond COACH_TIMEOUT_SECONDS, the time allowed to store advice and start sending.
GRACE_S = 1.0


class Recommendation(StrEnum):
    """What the runner may do next because of the coach (COACH_MODE=act only)."""

    NONE = "none"
    RERUN = "rerun"  # queue the experiment again later
    EXTEND = "extend"  # run it again with longer windows (extend_seconds)


@dataclass(frozen=True)
class OutreachResult:
    """What ``after_run`` did. ``recommendation`` is NONE unless COACH_MODE=act, the
    run was INCONCLUSIVE and the coach advised extend or rerun_later."""

    asked: bool
    why: str  # why the coach was (not) asked: inconclusive, close call, always...
    advice: StoredAdvice | None = None
    recommendation: Recommendation = Recommendation.NONE
    extend_seconds: float | None = None  # the decider's own estimate, for EXTEND
    deliveries: list[Delivery] = field(default_factory=list)
    elapsed_s: float = 0.0
    error: str | None = None


def max_after_run_seconds(settings: Settings) -> float:
    """The longest ``after_run`` may take: the coach's deadline plus notifying."""
    coach_s = settings.coach_timeout_seconds + GRACE_S if settings.coach_url else 0.0
    return coach_s + settings.notify_timeout_seconds + GRACE_S


def _scrubber(settings: Settings) -> Scrubber:
    return register_secrets(secrets_of(settings))


def after_run(
    settings: Settings, store: Store, run_id: str, experiment: Experiment
) -> OutreachResult:
    """Ask, store, notify, after run ``run_id`` has finished and the server is on
    baseline or the kept variant. Never raises; returns within
    ``max_after_run_seconds(settings)``."""
    started = time.monotonic()
    try:
        return _after_run(settings, store, run_id, experiment, started)
    except Exception as exc:  # a bug here must not turn a good run into a failed one
        message = _scrubber(settings)(f"{type(exc).__name__}: {exc}")
        log.error("outreach after run %s failed: %s", run_id, message)
        return OutreachResult(
            asked=False,
            why="error",
            elapsed_s=time.monotonic() - started,
            error=message,
        )


def notify_event(
    settings: Settings,
    event_kind: str,
    severity: str | Severity | None,
    text: str,
    numbers: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    experiment_id: str | None = None,
) -> list[Delivery]:
    """Tell the configured webhooks about an event mid-run (``EventKind``: apply
    failed, guardrail rollback, crash recovery, revert failed...). ``severity``
    None means the kind's DEFAULT_SEVERITY. Call it after acting, never before: it
    takes up to NOTIFY_TIMEOUT_SECONDS. Never raises."""
    known = event_kind in EventKind.__members__.values()
    kind = EventKind(event_kind).value if known else event_kind
    level = Severity.WARNING
    if severity is None and known:
        level = DEFAULT_SEVERITY[EventKind(event_kind)]
    elif severity is not None:
        try:
            level = Severity.parse(severity)
        except ValueError as exc:
            log.warning("%s; sent as warning", exc)
    title = kind.replace("-", " ")
    event = Event(
        kind=kind,
        severity=level,
        title=f"{experiment_id}: {title}" if experiment_id else title,
        text=_scrubber(settings)(text),
        numbers=dict(numbers or {}),
        run_id=run_id,
        experiment_id=experiment_id,
        dashboard_url=settings.dashboard_url,
    )
    try:
        return deliver(settings, event)
    except Exception as exc:  # deliver() reports per target; this is a bug's net
        log.error("notifying %s failed: %s", kind, _scrubber(settings)(repr(exc)))
        return []


# --- after a run --------------------------------------------------------------


def should_ask(
    settings: Settings, status: str, outcome: str | None, decisions: Sequence[Any]
) -> tuple[bool, str]:
    """(ask?, why) under COACH_URL and COACH_WHEN."""
    if not settings.coach_url:
        return False, "no COACH_URL"
    if settings.coach_when == "never":
        return False, "COACH_WHEN=never"
    if status != "done":
        return False, f"run {status}"
    if settings.coach_when == "always":
        return True, "always"
    why = coach_document.uncertainty(outcome, decisions, settings.improve_pct)
    return (True, why) if why else (False, "certain")


def _after_run(
    settings: Settings,
    store: Store,
    run_id: str,
    experiment: Experiment,
    started: float,
) -> OutreachResult:
    run = store.run(run_id)
    if run is None:
        raise LookupError(f"run {run_id} is not in the database")
    decisions = store.decisions(run_id)
    ask, why = should_ask(settings, run.status, run.outcome, decisions)

    advice: StoredAdvice | None = None
    recommendation = Recommendation.NONE
    if ask:
        document = coach_document.build_document(settings, store, run_id, experiment)
        names = [variant.name for variant in experiment.meta.variants]
        advice = _consult(settings, run_id, document, names)
        recommendation = recommend(settings, run.outcome, advice)
        if recommendation is not Recommendation.NONE:
            advice = _with_recommendation(advice, recommendation)
        save_advice(store, advice)

    event = decision_event(settings, run_id, experiment, store, advice)
    deliveries = deliver(settings, event) if event else []
    return OutreachResult(
        asked=ask,
        why=why,
        advice=advice,
        recommendation=recommendation,
        extend_seconds=_extend_seconds(decisions, recommendation),
        deliveries=deliveries,
        elapsed_s=time.monotonic() - started,
    )


def _consult(
    settings: Settings, run_id: str, document: Mapping[str, Any], names: list[str]
) -> StoredAdvice:
    """Ask in a worker thread and wait at most the coach's deadline plus a grace:
    whatever the network does, this returns on time. The worker only talks HTTP;
    the store stays on this thread."""
    scrub = _scrubber(settings)
    try:
        source = endpoint_of(settings.coach_url).kind
    except ConfigError as exc:
        log.warning("coach for run %s not asked: %s", run_id, exc.message)
        return new_advice(run_id, source="", status="failed", reason=exc.message)
    limit_s = settings.coach_timeout_seconds
    outcome: list[CoachAnswer | SmartError] = []

    def work() -> None:
        try:
            deadline = Deadline.after(limit_s)
            outcome.append(ask_coach(settings, document, names, deadline))
        except SmartError as exc:  # OutboundError, AdviceRejected, ConfigError
            outcome.append(exc)
        except Exception as exc:  # reported below as a failed exchange
            outcome.append(SmartError(f"{type(exc).__name__}: {exc}"))

    started = time.monotonic()
    worker = threading.Thread(target=work, name="smart-tui-coach", daemon=True)
    worker.start()
    worker.join(limit_s + GRACE_S)
    elapsed_s = time.monotonic() - started
    if not outcome:
        reason = f"no answer within {limit_s:g} s (COACH_TIMEOUT_SECONDS); gave up"
        log.warning("coach for run %s: %s", run_id, reason)
        return new_advice(
            run_id, source=source, status="failed", reason=reason, elapsed_s=elapsed_s
        )
    result = outcome[0]
    if isinstance(result, CoachAnswer):
        return new_advice(
            run_id,
            source=source,
            status="ok",
            advice=result.advice.advice,
            variant=result.advice.variant,
            note=scrub(result.advice.note),
            elapsed_s=elapsed_s,
        )
    reason = scrub(result.message)
    if isinstance(result, AdviceRejected):
        log.warning("coach advice for run %s rejected: %s", run_id, reason)
        return new_advice(
            run_id, source=source, status="rejected", reason=reason, elapsed_s=elapsed_s
        )
    log.warning("coach for run %s failed: %s", run_id, reason)
    return new_advice(
        run_id, source=source, status="failed", reason=reason, elapsed_s=elapsed_s
    )


def recommend(
    settings: Settings, outcome: str | None, advice: StoredAdvice
) -> Recommendation:
    """The only effects advice may have: with COACH_MODE=act, an INCONCLUSIVE run
    may be extended or rerun. Nothing else, and never a KEEP."""
    if settings.coach_mode != "act" or advice.status != "ok":
        return Recommendation.NONE
    if outcome != "INCONCLUSIVE":
        return Recommendation.NONE
    if advice.advice == "extend":
        return Recommendation.EXTEND
    if advice.advice == "rerun_later":
        return Recommendation.RERUN
    if advice.advice in ("keep", "try_variant"):
        log.info(
            "coach advised %s for an INCONCLUSIVE run; not acted on: only more "
            "data can earn a KEEP",
            advice.advice,
        )
    return Recommendation.NONE


def _with_recommendation(
    advice: StoredAdvice, recommendation: Recommendation
) -> StoredAdvice:
    fields = {name: getattr(advice, name) for name in advice.__dataclass_fields__}
    return StoredAdvice(**{**fields, "recommendation": recommendation.value})


def _extend_seconds(
    decisions: Sequence[Mapping[str, Any]], recommendation: Recommendation
) -> float | None:
    """The decider's estimate of the window an answer needs, not the coach's."""
    if recommendation is not Recommendation.EXTEND:
        return None
    needed = [
        float(row["details"]["needed_seconds"])
        for row in decisions
        if isinstance(row["details"].get("needed_seconds"), int | float)
    ]
    return max(needed, default=None)


# --- the message --------------------------------------------------------------


def _ms(value: Any) -> str:
    return f"{value:.2f} ms" if isinstance(value, int | float) else "n/a"


def _pct(value: Any) -> str:
    return f"{value:.2f}%" if isinstance(value, int | float) else "n/a"


def _decision_line(row: Mapping[str, Any]) -> str:
    details = row["details"]
    change = ""
    effect = details.get("effect") or {}
    ratio = effect.get("ratio") if isinstance(effect, Mapping) else None
    if isinstance(ratio, int | float):
        change = f" ({(ratio - 1) * 100:+.0f}%)"
    why = "; ".join(row["reasons"]) or "no reason recorded"
    return (
        f"{row['variant']}: {row['decision']}, p50 "
        f"{_ms(details.get('baseline_p50_ms'))} -> {_ms(details.get('variant_p50_ms'))}"
        f"{change}, 5xx {_pct(details.get('baseline_5xx_pct'))} -> "
        f"{_pct(details.get('variant_5xx_pct'))}. Why: {why}"
    )


def _numbers(store: Store, run_id: str) -> dict[str, Any]:
    numbers: dict[str, Any] = {}
    for window in store.windows(run_id):
        prefix = f"{window['variant']}_"
        summary = window["summary"]
        for name in ("p50_ms", "p99_ms", "error_pct", "requests"):
            if summary.get(name) is not None:
                numbers[prefix + name] = summary[name]
    return numbers


def decision_event(
    settings: Settings,
    run_id: str,
    experiment: Experiment,
    store: Store,
    advice: StoredAdvice | None,
) -> Event | None:
    """The "decision made" or "pending approval" event of a finished run."""
    run = store.run(run_id)
    if run is None or run.status != "done":
        return None  # a failed run is reported by the runner with notify_event
    decisions = store.decisions(run_id)
    pending = [row for row in decisions if row["acted"] == "pending"]
    if settings.approval == "manual" and pending:
        kind = EventKind.PENDING_APPROVAL
        severity = DEFAULT_SEVERITY[kind]
        what = f"{len(pending)} decision(s) wait for approval"
    else:
        kind = EventKind.DECISION
        severity = Severity.NOTICE if run.outcome == "KEEP" else Severity.INFO
        what = f"{run.outcome}, kept {run.kept_variant or 'baseline'}"
    lines = [_decision_line(row) for row in decisions]
    if advice is not None:
        lines.append(advice.summary())
    return Event(
        kind=kind.value,
        severity=severity,
        title=f"{experiment.id}: {what}",
        text=_scrubber(settings)("\n".join(lines)),
        numbers=_numbers(store, run_id),
        run_id=run_id,
        experiment_id=experiment.id,
        dashboard_url=settings.dashboard_url,
    )


# --- smart-tui coach test / notify test -----------------------------------------


def coach_test(settings: Settings) -> CoachAnswer:
    """Send the sample document and return the validated answer; raises the
    SmartError that explains a failure (ConfigError, OutboundError, AdviceRejected).
    """
    document = coach_document.sample_document(settings)
    names = list(coach_document.SAMPLE_VARIANTS)
    deadline = Deadline.after(settings.coach_timeout_seconds)
    answer = ask_coach(settings, document, names, deadline)
    note = _scrubber(settings)(answer.advice.note)
    return replace(answer, advice=answer.advice.model_copy(update={"note": note}))


def notify_test(settings: Settings, severity: str) -> list[Delivery]:
    """Send a test message to every configured target at ``severity``."""
    if not targets_of(settings):
        raise NothingToDo(
            "no notification target: set SLACK_WEBHOOK_URL, DISCORD_WEBHOOK_URL or "
            "WEBHOOK_URL in smart.conf"
        )
    event = Event(
        kind=EventKind.TEST.value,
        severity=Severity.parse(severity),
        title="test message",
        text="Sent by `smart-tui notify test`; no action needed.",
        numbers={"p50_ms": 1.25, "error_pct": 0.0},
        dashboard_url=settings.dashboard_url,
    )
    return deliver(settings, event)
