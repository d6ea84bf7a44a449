"""COACH_TOKEN and webhook URLs are used but never shown: a search of every output a
coach exchange and its notifications leave behind (logs including httpx's, stdout
and stderr of the commands, the sqlite files, the dashboard, error messages and the
settings table), and the startup refusal of a smart.conf others may read."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

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
from smart_tui.commands import settings_from
from smart_tui.config import describe, format_rows, load_settings
from smart_tui.dashboard import render_dashboard
from smart_tui.errors import ConfigError
from smart_tui.storage import Store

__all__ = ["restore_logging", "serve"]  # fixtures shared with test_coach

TOKEN = "tok-5b1d-do-not-leak-8c2e"
SLACK_SECRET = "T0SECRET/B0SECRET/slacksecretpart"
DISCORD_SECRET = "4242/discordsecretpart"
HOOK_SECRET = "generic-hook-secret-key"


def secrets_in(text: str) -> list[str]:
    needles = [TOKEN, SLACK_SECRET, DISCORD_SECRET, HOOK_SECRET]
    needles += ["slacksecretpart", "discordsecretpart", "generic-hook-secret"]
    return [needle for needle in needles if needle in text]


def echo_token(seen: Seen) -> tuple[int, dict[str, str]]:
    # A hostile coach: it echoes what it was sent back into the note.
    return 200, {"advice": "agree", "note": f"got {seen.headers['Authorization']}"}


@pytest.mark.usefixtures("restore_logging")
def test_no_output_carries_a_secret(
    tmp_path: Path,
    serve: Callable[..., FakeServer],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx logs every URL at INFO
    coach = serve(echo_token)
    failing_coach = serve(lambda seen: (500, {"error": TOKEN}))
    slack = serve(lambda seen: (500, f"bad {seen.path}"))
    discord = serve(lambda seen: (200, "ok"))
    discord.close()  # refused: its error text must not carry the URL
    hook = serve(lambda seen: (200, "ok"))
    conf = tmp_path / "smart.conf"
    conf.write_text(
        f"COACH_URL={coach.url}/advise\nCOACH_TOKEN={TOKEN}\nCOACH_WHEN=always\n"
        f"COACH_RETRIES=0\n"
        f"SLACK_WEBHOOK_URL={slack.url}/services/{SLACK_SECRET}\n"
        f"DISCORD_WEBHOOK_URL={discord.url}/api/webhooks/{DISCORD_SECRET}\n"
        f"WEBHOOK_URL={hook.url}/hook?key={HOOK_SECRET}\n"
        "SLACK_MIN_SEVERITY=info\nDISCORD_MIN_SEVERITY=info\n"
        "WEBHOOK_MIN_SEVERITY=info\nDB_PATH=var/smart.db\n"
    )
    conf.chmod(0o600)
    settings = settings_from(conf, {})
    outputs: list[str] = []

    # A run recorded as the runner records it, then everything outreach does.
    store = Store(settings.database_path)
    store.start_run(
        "r0",
        "007_demo",
        trigger="test",
        pid=1,
        host="h",
        settings={row.key: row.value_shown for row in describe(settings)},
    )
    store.finish_run("r0", status="done", outcome="REVERT")
    experiment = make_experiment(tmp_path)
    good = outreach.after_run(settings, store, seed_run(store), experiment)
    bad_settings = settings.model_copy(update={"coach_url": failing_coach.url})
    bad = outreach.after_run(
        bad_settings, store, seed_run(store, run_id="r2"), experiment
    )
    events = outreach.notify_event(
        settings, "apply-failed", "critical", f"apply failed near {hook.url}/hook"
    )
    outputs.append(render_dashboard(store))
    store.close()

    assert coach.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"  # it was used
    assert hook.seen and slack.seen  # and the webhooks were called
    assert good.advice is not None and good.advice.note == "got Bearer ****"
    assert bad.advice is not None and bad.advice.reason.endswith("answered HTTP 500")
    outputs += [repr(good), repr(bad), repr(events)]

    # The commands' own output, success and failure.
    assert main(["--config", str(conf), "coach", "test"]) == 0
    assert main(["--config", str(conf), "notify", "test"]) == 7
    bad_conf = tmp_path / "bad.conf"
    bad_conf.write_text(f"SLACK_WEBHOOK_URL=ftp://{SLACK_SECRET}\n")
    assert main(["--config", str(bad_conf), "check-config"]) == 3
    assert main(["--config", str(conf), "check-config"]) == 0
    captured = capsys.readouterr()
    outputs += [captured.out, captured.err, format_rows(describe(settings))]
    assert "SLACK_WEBHOOK_URL=**** is not an http(s):// URL" in captured.err

    outputs.append(caplog.text)
    assert "HTTP Request: POST" in caplog.text  # httpx's own lines were captured
    outputs += [
        path.read_bytes().decode("utf-8", "replace")
        for path in (tmp_path / "var").iterdir()
        if path.is_file()  # smart.db and its -wal / -shm
    ]
    assert any("got Bearer ****" in text for text in outputs[-3:])
    for text in outputs:
        assert secrets_in(text) == []


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from(path, {})
    return caught.value.message


# Debian's base groups: staff is shared (no user of that name), www-data is the
# www-data user's own.
SHARED_GROUP = "staff"
PRIVATE_GROUP = "www-data"


@pytest.mark.parametrize(
    ("text", "mode", "held"),
    [
        (f"COACH_TOKEN={TOKEN}\n", 0o644, "COACH_TOKEN"),
        (f"COACH_TOKEN={TOKEN}\n", 0o640, "COACH_TOKEN"),
        ("WEBHOOK_URL=https://h.example/x\n", 0o604, "WEBHOOK_URL"),
        (
            f"SLACK_WEBHOOK_URL=https://h.example/x\nCOACH_TOKEN={TOKEN}\n",
            0o644,
            "COACH_TOKEN, SLACK_WEBHOOK_URL",
        ),
    ],
)
def test_a_readable_file_holding_a_secret_is_refused(
    tmp_path: Path, text: str, mode: int, held: str
) -> None:
    path = tmp_path / "smart.conf"
    path.write_text(text)
    path.chmod(mode)
    # A group others belong to; with the reader's own group 640 would be fine.
    shutil.chown(path, group=SHARED_GROUP)
    assert refusal(path) == (
        f"{path} holds {held} but group or others may read it "
        f"(mode {mode:04o}); run `chmod 600 {path}` (or 640 with the service "
        "user's own group)"
    )


def test_640_with_the_service_users_own_group_is_accepted(tmp_path: Path) -> None:
    """root:smart 0640, as install.sh leaves it: only the service user reads it."""
    path = tmp_path / "smart.conf"
    path.write_text(f"COACH_TOKEN={TOKEN}\n")
    path.chmod(0o640)
    shutil.chown(path, group=PRIVATE_GROUP)
    settings_from(path, {})
    path.chmod(0o644)  # others: refused whatever the group
    assert "group or others may read it (mode 0644)" in refusal(path)


@pytest.mark.usefixtures("restore_logging")
def test_the_refusal_is_one_line_and_exit_code_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "smart.conf"
    path.write_text(f"COACH_TOKEN={TOKEN}\n")
    path.chmod(0o644)
    assert main(["--config", str(path), "check-config"]) == 3
    assert capsys.readouterr().err == (
        f"smart-tui: bad config: {path} holds COACH_TOKEN but group or others may "
        f"read it (mode 0644); run `chmod 600 {path}` (or 640 with the service "
        "user's own group)\n"
    )


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        (f"COACH_TOKEN={TOKEN}\n", 0o600),
        (f"COACH_TOKEN={TOKEN}\n", 0o400),
        ("COACH_TOKEN=\nSLACK_WEBHOOK_URL=\nIMPROVE_PCT=5\n", 0o644),
    ],
)
def test_a_private_file_or_one_without_secrets_is_accepted(
    tmp_path: Path, text: str, mode: int
) -> None:
    path = tmp_path / "smart.conf"
    path.write_text(text)
    path.chmod(mode)
    settings_from(path, {})


def test_a_token_from_the_environment_does_not_need_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "smart.conf"
    path.write_text("IMPROVE_PCT=5\n")
    path.chmod(0o644)
    monkeypatch.setenv("COACH_TOKEN", TOKEN)
    settings = settings_from(path, {})
    assert settings.coach_token.get_secret_value() == TOKEN
    assert TOKEN not in format_rows(describe(load_settings(path)))
