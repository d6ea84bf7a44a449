"""Notifications to a Slack incoming webhook, a Discord webhook and a generic JSON
webhook. Each target has a minimum severity, so a run that changed nothing need not
page anyone. ``deliver`` sends to every target in parallel within one deadline,
logs failures (secrets scrubbed) and never raises: a notification never affects a run.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from smart_tui.coach.client import secrets_of
from smart_tui.coach.wire import (
    Deadline,
    OutboundError,
    Request,
    Scrubber,
    post_json,
    register_secrets,
)
from smart_tui.settings import Settings
from smart_tui.storage import utc_now

log = logging.getLogger("smart_tui.notify")

NOTIFY_CONNECT_TIMEOUT_S = 2.0
DISCORD_MAX_CHARS = 2000
EVENT_SCHEMA = "smart-tui.event"
EVENT_VERSION = 1


class Severity(IntEnum):
    """How much an event matters; a target gets events at or above its minimum."""

    INFO = 10  # a run that changed nothing
    NOTICE = 20  # a change was kept, or a decision waits for a human
    WARNING = 30  # something failed and was put right (apply failed, rollback)
    CRITICAL = 40  # something is wrong now (a revert failed)

    @classmethod
    def parse(cls, value: str | Severity) -> Severity:
        if isinstance(value, Severity):
            return value
        try:
            return cls[value.strip().upper()]
        except KeyError:
            known = ", ".join(level.name.lower() for level in cls)
            raise ValueError(
                f"unknown severity {value!r}; use one of {known}"
            ) from None

    @property
    def label(self) -> str:
        return self.name.lower()


class EventKind(StrEnum):
    DECISION = "decision"
    PENDING_APPROVAL = "pending-approval"
    APPLY_FAILED = "apply-failed"
    GUARDRAIL_ROLLBACK = "guardrail-rollback"
    CRASH_RECOVERY = "crash-recovery"
    REVERT_FAILED = "revert-failed"
    TEST = "test"


# The severity each event has unless the caller knows better (README's table).
DEFAULT_SEVERITY = {
    EventKind.DECISION: Severity.INFO,
    EventKind.PENDING_APPROVAL: Severity.NOTICE,
    EventKind.APPLY_FAILED: Severity.WARNING,
    EventKind.GUARDRAIL_ROLLBACK: Severity.WARNING,
    EventKind.CRASH_RECOVERY: Severity.WARNING,
    EventKind.REVERT_FAILED: Severity.CRITICAL,
    EventKind.TEST: Severity.CRITICAL,
}


@dataclass(frozen=True)
class Event:
    """What happened (title), why (text), and the figures behind it."""

    kind: str
    severity: Severity
    title: str
    text: str
    numbers: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    experiment_id: str | None = None
    dashboard_url: str = ""
    at: str = field(default_factory=utc_now)


@dataclass(frozen=True)
class Target:
    name: str  # slack, discord or webhook
    url: str
    min_severity: Severity


@dataclass(frozen=True)
class Delivery:
    """How sending to one target went; ``detail`` is safe to show."""

    target: str
    sent: bool
    status: int | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.sent and self.status is not None and 200 <= self.status < 300


def targets_of(settings: Settings) -> list[Target]:
    """The configured targets, in a fixed order."""
    candidates = [
        ("slack", settings.slack_webhook_url, settings.slack_min_severity),
        ("discord", settings.discord_webhook_url, settings.discord_min_severity),
        ("webhook", settings.webhook_url, settings.webhook_min_severity),
    ]
    return [
        Target(name, url.get_secret_value(), Severity.parse(minimum))
        for name, url, minimum in candidates
        if url.get_secret_value()
    ]


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.2f}"
    return "n/a" if value is None else str(value)


def plain_text(event: Event) -> str:
    """The message as plain lines: what happened, the why, the numbers, the link."""
    lines = [f"[smart-tui] {event.severity.label}: {event.title}"]
    if event.text:
        lines.append(event.text)
    if event.numbers:
        lines.append(
            ", ".join(f"{key} {_number(value)}" for key, value in event.numbers.items())
        )
    if event.dashboard_url:
        lines.append(f"dashboard: {event.dashboard_url}")
    return "\n".join(lines)


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reads <...> as links and mentions; shown as text instead.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload_for(target: Target, event: Event) -> dict[str, Any]:
    text = plain_text(event)
    if target.name == "slack":
        return {"text": _slack_escape(text)}
    if target.name == "discord":
        if len(text) > DISCORD_MAX_CHARS:
            text = text[: DISCORD_MAX_CHARS - 1] + "…"
        # No @everyone or role pings, whatever an experiment's name says.
        return {"content": text, "allowed_mentions": {"parse": []}}
    return {
        "schema": EVENT_SCHEMA,
        "version": EVENT_VERSION,
        "event": event.kind,
        "severity": event.severity.label,
        "title": event.title,
        "text": event.text,
        "numbers": dict(event.numbers),
        "run_id": event.run_id,
        "experiment_id": event.experiment_id,
        "dashboard_url": event.dashboard_url or None,
        "at": event.at,
    }


def _send_one(target: Target, event: Event, deadline: Deadline) -> Delivery:
    request = Request(
        url=target.url,
        payload=payload_for(target, event),
        what=f"the {target.name} webhook",
        headers={},
        connect_timeout_s=NOTIFY_CONNECT_TIMEOUT_S,
        retries=1,
        max_body_bytes=16 * 1024,
    )
    try:
        reply = post_json(request, deadline)
    except OutboundError as exc:
        return Delivery(target.name, False, None, exc.message)
    detail = f"HTTP {reply.status}"
    return Delivery(target.name, True, reply.status, detail)


def deliver(settings: Settings, event: Event) -> list[Delivery]:
    """Send ``event`` to every target whose minimum it meets, all within
    NOTIFY_TIMEOUT_SECONDS. A target still busy at the deadline is given up on."""
    timeout_s = settings.notify_timeout_seconds
    scrub = register_secrets(secrets_of(settings))
    deliveries: dict[str, Delivery] = {}
    threads = []
    deadline = Deadline.after(timeout_s)
    for target in targets_of(settings):
        if event.severity < target.min_severity:
            minimum = f"{target.name.upper()}_MIN_SEVERITY={target.min_severity.label}"
            deliveries[target.name] = Delivery(
                target.name, False, None, f"skipped: below {minimum}"
            )
            continue
        thread = threading.Thread(
            target=_send_into,
            args=(deliveries, target, event, deadline, scrub),
            name=f"smart-tui-notify-{target.name}",
            daemon=True,  # an abandoned send must not hold the process open
        )
        thread.start()
        threads.append((target, thread))
    for target, thread in threads:
        thread.join(deadline.remaining() + 0.2)
        if thread.is_alive():
            deliveries.setdefault(
                target.name,
                Delivery(target.name, False, None, f"gave up after {timeout_s:.1f} s"),
            )
    results = [deliveries[target.name] for target in targets_of(settings)]
    for delivery in results:
        if delivery.ok or delivery.detail.startswith("skipped"):
            log.debug("notification to %s: %s", delivery.target, delivery.detail)
        else:
            log.warning(
                "notification to %s failed: %s", delivery.target, delivery.detail
            )
    return results


def _send_into(
    deliveries: dict[str, Delivery],
    target: Target,
    event: Event,
    deadline: Deadline,
    scrub: Scrubber,
) -> None:
    # A thread's exception would only reach stderr via threading.excepthook, with
    # the URL in it: every failure becomes a scrubbed Delivery instead.
    try:
        delivery = _send_one(target, event, deadline)
    except Exception as exc:
        delivery = Delivery(target.name, False, None, f"{type(exc).__name__}: {exc}")
    deliveries.setdefault(
        target.name,
        Delivery(
            delivery.target, delivery.sent, delivery.status, scrub(delivery.detail)
        ),
    )
