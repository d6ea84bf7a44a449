"""Slack, Discord and generic webhooks against real receivers on 127.0.0.1: who gets
which severity, what each message says, and that a failing or slow receiver costs a
bounded time and never an exception."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_coach import (
    FakeServer,
    Seen,
    make_experiment,
    restore_logging,
    seed_run,
    serve,
)

from smart_tui import outreach
from smart_tui.cli import main
from smart_tui.notify import Event, Severity, deliver
from smart_tui.settings import Settings
from smart_tui.storage import Store

__all__ = ["restore_logging", "serve"]  # fixtures shared with test_coach


def ok(seen: Seen) -> tuple[int, str]:
    return 200, "ok"


def receivers(
    serve: Callable[..., FakeServer], respond: Callable[[Seen], Any] = ok
) -> dict[str, FakeServer]:
    return {name: serve(respond) for name in ("slack", "discord", "webhook")}


def hook_settings(
    tmp_path: Path, hooks: dict[str, FakeServer], **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "base_dir": tmp_path,
        "slack_webhook_url": hooks["slack"].url + "/services/T0/B0/s3cr3tpath",
        "discord_webhook_url": hooks["discord"].url + "/api/webhooks/1/s3cr3t",
        "webhook_url": hooks["webhook"].url + "/hook",
        "slack_min_severity": "notice",
        "discord_min_severity": "warning",
        "webhook_min_severity": "info",
        "dashboard_url": "https://smart.example/",
        "notify_timeout_seconds": 2,
    }
    return Settings(**{**values, **extra})


def event(severity: Severity, title: str = "007_demo: KEEP, kept fast") -> Event:
    return Event(
        kind="decision",
        severity=severity,
        title=title,
        text="fast: KEEP. Why: p50 -21% [-25%, -18%] clears 10%",
        numbers={"baseline_p50_ms": 2.0, "fast_p50_ms": 1.58, "missing": None},
        run_id="r1",
        experiment_id="007_demo",
        dashboard_url="https://smart.example/",
    )


@pytest.mark.parametrize(
    ("severity", "reached"),
    [
        (Severity.INFO, {"webhook"}),
        (Severity.NOTICE, {"webhook", "slack"}),
        (Severity.WARNING, {"webhook", "slack", "discord"}),
        (Severity.CRITICAL, {"webhook", "slack", "discord"}),
    ],
)
def test_each_target_gets_only_what_meets_its_minimum(
    tmp_path: Path,
    serve: Callable[..., FakeServer],
    severity: Severity,
    reached: set[str],
) -> None:
    hooks = receivers(serve)
    deliveries = deliver(hook_settings(tmp_path, hooks), event(severity))

    assert {name for name, hook in hooks.items() if hook.seen} == reached
    assert {d.target for d in deliveries if d.ok} == reached
    skipped = {d.target: d.detail for d in deliveries if not d.sent}
    if "discord" not in reached:
        assert skipped["discord"] == "skipped: below DISCORD_MIN_SEVERITY=warning"


def test_each_message_says_what_the_numbers_and_why(
    tmp_path: Path, serve: Callable[..., FakeServer]
) -> None:
    hooks = receivers(serve)
    deliver(
        hook_settings(tmp_path, hooks),
        event(Severity.CRITICAL, "<!channel> @everyone 007_demo & co"),
    )

    slack = hooks["slack"].seen[0]
    assert slack.path == "/services/T0/B0/s3cr3tpath"
    assert slack.json() == {
        "text": "[smart-tui] critical: &lt;!channel&gt; @everyone 007_demo &amp; co\n"
        "fast: KEEP. Why: p50 -21% [-25%, -18%] clears 10%\n"
        "baseline_p50_ms 2.00, fast_p50_ms 1.58, missing n/a\n"
        "dashboard: https://smart.example/"
    }
    discord = hooks["discord"].seen[0].json()
    assert discord["allowed_mentions"] == {"parse": []}
    assert "Why: p50 -21%" in discord["content"]
    generic = hooks["webhook"].seen[0].json()
    assert generic | {"at": "x"} == {
        "schema": "smart-tui.event",
        "version": 1,
        "event": "decision",
        "severity": "critical",
        "title": "<!channel> @everyone 007_demo & co",
        "text": "fast: KEEP. Why: p50 -21% [-25%, -18%] clears 10%",
        "numbers": {"baseline_p50_ms": 2.0, "fast_p50_ms": 1.58, "missing": None},
        "run_id": "r1",
        "experiment_id": "007_demo",
        "dashboard_url": "https://smart.example/",
        "at": "x",
    }


def test_failing_and_missing_receivers_are_logged_not_raised(
    tmp_path: Path,
    serve: Callable[..., FakeServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = receivers(serve, lambda seen: (500, "no"))
    hooks["discord"].close()  # connection refused
    settings = hook_settings(tmp_path, hooks)

    deliveries = outreach.notify_event(
        settings, "apply-failed", "warning", "apply.sh exited 1", {"exit": 1}
    )

    assert [(d.target, d.ok) for d in deliveries] == [
        ("slack", False),
        ("discord", False),
        ("webhook", False),
    ]
    assert len(hooks["slack"].seen) == 2  # one retry on a 5xx
    assert "notification to slack failed: HTTP 500" in caplog.text
    assert (
        "notification to discord failed: the discord webhook at http://127.0.0.1:"
        in (caplog.text)
    )
    assert "s3cr3t" not in caplog.text


def test_a_slow_receiver_is_given_up_on_in_time(
    tmp_path: Path, serve: Callable[..., FakeServer]
) -> None:
    hooks = receivers(serve)
    slow = serve(ok, delay_s=30)
    settings = hook_settings(
        tmp_path, hooks, webhook_url=slow.url + "/hook", notify_timeout_seconds=1
    )

    started = time.monotonic()
    deliveries = outreach.notify_event(settings, "guardrail-rollback", "critical", "")
    elapsed_s = time.monotonic() - started

    # Bounded by NOTIFY_TIMEOUT_SECONDS plus a grace, far from the 30 s receiver.
    assert elapsed_s < settings.notify_timeout_seconds + outreach.GRACE_S
    assert {d.target: d.ok for d in deliveries} == {
        "slack": True,
        "discord": True,
        "webhook": False,
    }


def test_unknown_severity_is_sent_as_warning(
    tmp_path: Path,
    serve: Callable[..., FakeServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = receivers(serve)
    outreach.notify_event(hook_settings(tmp_path, hooks), "crash-recovery", "loud", "x")
    assert "unknown severity 'loud'" in caplog.text
    assert hooks["discord"].seen  # warning reaches discord's minimum


def test_after_run_reports_the_decision_with_numbers_and_advice(
    tmp_path: Path, serve: Callable[..., FakeServer]
) -> None:
    hooks = receivers(serve)
    coach = serve(lambda seen: (200, {"advice": "extend", "note": "too noisy"}))
    settings = hook_settings(tmp_path, hooks, coach_url=coach.url)
    store = Store(tmp_path / "smart.db")
    experiment = make_experiment(tmp_path)
    run_id = seed_run(store)

    result = outreach.after_run(settings, store, run_id, experiment)
    store.close()

    assert [d.target for d in result.deliveries if d.ok] == ["webhook"]  # info only
    sent = hooks["webhook"].seen[0].json()
    assert sent["event"] == "decision"
    assert sent["title"] == "007_demo: INCONCLUSIVE, kept baseline"
    assert sent["text"] == (
        "fast: INCONCLUSIVE, p50 2.00 ms -> 1.90 ms (-5%), 5xx 0.00% -> 0.00%. "
        "Why: p50 -5% [-15%, +5%]: cannot tell at 95%\n"
        "coach: extend: too noisy"
    )
    assert sent["numbers"]["baseline_p50_ms"] == 2.0
    assert sent["numbers"]["fast_p50_ms"] == 1.9


def test_pending_approval_is_its_own_event(
    tmp_path: Path, serve: Callable[..., FakeServer]
) -> None:
    hooks = receivers(serve)
    settings = hook_settings(tmp_path, hooks, approval="manual")
    store = Store(tmp_path / "smart.db")
    run_id = seed_run(store, "KEEP")
    store.db.execute("update decisions set acted = 'pending'")
    store.db.conn.commit()

    result = outreach.after_run(settings, store, run_id, make_experiment(tmp_path))
    store.close()

    assert {d.target for d in result.deliveries if d.ok} == {"slack", "webhook"}
    sent = hooks["webhook"].seen[0].json()
    assert (sent["event"], sent["severity"]) == ("pending-approval", "notice")
    assert sent["title"] == "007_demo: 1 decision(s) wait for approval"


@pytest.mark.usefixtures("restore_logging")
def test_notify_test_command(
    tmp_path: Path,
    serve: Callable[..., FakeServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    hooks = receivers(serve)
    conf = tmp_path / "smart.conf"
    conf.write_text(
        f"SLACK_WEBHOOK_URL={hooks['slack'].url}/services/x/y/z\n"
        f"WEBHOOK_URL={hooks['webhook'].url}/\nWEBHOOK_MIN_SEVERITY=critical\n"
    )
    conf.chmod(0o600)

    code = main(["--config", str(conf), "notify", "test", "--severity", "notice"])

    out, _ = capsys.readouterr()
    assert code == 0
    assert out.splitlines() == [
        "slack    HTTP 200",
        "webhook  skipped: below WEBHOOK_MIN_SEVERITY=critical",
    ]
    assert "notify test" in hooks["slack"].seen[0].json()["text"]


@pytest.mark.usefixtures("restore_logging")
def test_notify_test_without_targets_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "smart.conf"
    conf.write_text("")
    assert main(["--config", str(conf), "notify", "test"]) == 10
    assert "no notification target" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kind", "reached"),
    [
        ("decision", {"webhook"}),
        ("pending-approval", {"webhook", "slack"}),
        ("guardrail-rollback", {"webhook", "slack", "discord"}),
        ("revert-failed", {"webhook", "slack", "discord"}),
        ("something-new", {"webhook", "slack", "discord"}),  # unknown: warning
    ],
)
def test_without_a_severity_each_kind_has_its_own(
    tmp_path: Path, serve: Callable[..., FakeServer], kind: str, reached: set[str]
) -> None:
    hooks = receivers(serve)
    deliveries = outreach.notify_event(
        hook_settings(tmp_path, hooks), kind, None, "text", experiment_id="007_demo"
    )
    assert {d.target for d in deliveries if d.ok} == reached
    assert hooks["webhook"].seen[0].json()["title"] == (
        f"007_demo: {kind.replace('-', ' ')}"
    )
