"""Core approvals without Textual: listing, approving a KEEP (the variant re-applied
and proven live against a stand-in nginx), failures that leave baseline, override
both ways, expiry, and the run lock."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from test_tui_seed import NOW, seeded, write_experiment

from smart_tui import approvals
from smart_tui.errors import ApplyFailed, LockHeld
from smart_tui.lock import RunLock
from smart_tui.settings import Settings
from smart_tui.storage import Store

BASELINE_CONF = "worker_processes 1;\n"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Seeded data whose target is a stand-in nginx: a script that records its
    arguments and fails ``-t`` when the config contains ``broken``."""
    nginx_conf = tmp_path / "nginx.conf"
    nginx_conf.write_text(BASELINE_CONF)
    fake = tmp_path / "fake-nginx"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path}/nginx-calls\n'
        f'if [ "$1" = -t ] && grep -q broken {nginx_conf}; then exit 1; fi\n'
    )
    fake.chmod(0o755)
    made = seeded(
        tmp_path / "ws",
        NGINX_CONF=str(nginx_conf),
        NGINX_CMD=str(fake),
        TARGET_URL="http://127.0.0.1:9/",
    )
    for name in ("002_proxy_cache", "003_gzip"):
        (made.experiments_path / name / "apply.sh").write_text(
            '#!/bin/sh\necho "# $1" >> "$SMART_NGINX_CONF"\n'
        )
        (made.experiments_path / name / "apply.sh").chmod(0o755)
    return made


@pytest.fixture
def store(settings: Settings) -> Store:
    opened = Store(settings.database_path)
    yield opened
    opened.close()


def acted(store: Store, run_id: str) -> list[str]:
    rows = store.db.execute("select acted from decisions where run_id = ?", [run_id])
    return [row[0] for row in rows]


def conf(settings: Settings) -> str:
    return Path(settings.nginx_conf).read_text()


def test_pending_lists_oldest_first(store: Store) -> None:
    waiting = approvals.pending(store)
    assert [(p.run_id, p.variant, p.decision) for p in waiting] == [
        ("r5", "max", "KEEP"),
        ("r4", "on", "KEEP"),
    ]
    assert approvals.pending_count(store) == 2
    assert waiting[1].age_s(NOW) == 1800


def test_approve_keep_applies_the_variant_and_proves_it(settings, store) -> None:
    item = approvals.pending(store)[1]

    note = approvals.approve(settings, store, item.id)

    assert note == "r4: KEEP of on approved; the variant is live"
    assert conf(settings) == BASELINE_CONF + "# on\n"
    calls = (Path(settings.nginx_cmd).parent / "nginx-calls").read_text()
    assert calls.splitlines() == ["-t", "-s reload"]
    assert acted(store, "r4") == ["kept"]
    run = store.run("r4")
    assert run is not None and (run.outcome, run.kept_variant) == ("KEEP", "on")
    with pytest.raises(approvals.ApprovalError, match="no longer pending"):
        approvals.approve(settings, store, item.id)


def test_approve_refuses_a_config_nginx_rejects(settings, store) -> None:
    (settings.experiments_path / "002_proxy_cache" / "apply.sh").write_text(
        '#!/bin/sh\necho "broken" >> "$SMART_NGINX_CONF"\n'
    )
    item = approvals.pending(store)[1]

    with pytest.raises(ApplyFailed, match="restored the baseline files"):
        approvals.approve(settings, store, item.id)

    assert conf(settings) == BASELINE_CONF
    assert acted(store, "r4") == ["pending"]


def test_approve_refuses_an_apply_that_changes_nothing(settings, store) -> None:
    (settings.experiments_path / "002_proxy_cache" / "apply.sh").write_text("true\n")
    item = approvals.pending(store)[1]

    with pytest.raises(ApplyFailed, match="changed no watched file"):
        approvals.approve(settings, store, item.id)
    assert acted(store, "r4") == ["pending"]


def test_approve_waits_for_the_run_lock(settings, store) -> None:
    item = approvals.pending(store)[1]
    with (
        RunLock(settings.var_path / "run.lock", "a timer run"),
        pytest.raises(LockHeld, match="a timer run holds the lock since"),
    ):
        approvals.approve(settings, store, item.id)
    assert conf(settings) == BASELINE_CONF


def test_override_to_revert_records_only(settings, store) -> None:
    item = approvals.pending(store)[1]

    note = approvals.override(store, item.id, "revert")

    assert "overridden to REVERT" in note
    assert conf(settings) == BASELINE_CONF
    assert acted(store, "r4") == ["overridden-reverted"]
    run = store.run("r4")
    assert run is not None and run.outcome == "REVERT"


def test_override_to_keep_applies(settings, store) -> None:
    item = approvals.pending(store)[0]
    with pytest.raises(approvals.ApprovalError, match="pass settings"):
        approvals.override(store, item.id, "KEEP")

    approvals.override(store, item.id, "KEEP", settings=settings)

    assert conf(settings) == BASELINE_CONF + "# max\n"
    assert acted(store, "r5") == ["overridden-kept"]


def test_approving_a_revert_stays_on_baseline(settings, store) -> None:
    write_experiment(settings.experiments_path, "005_extra", "x", ["v"])
    with store.db.conn:
        store.db.execute("update decisions set decision = 'REVERT' where run_id='r4'")
    item = approvals.pending(store)[1]

    approvals.approve(settings, store, item.id)

    assert conf(settings) == BASELINE_CONF
    assert acted(store, "r4") == ["reverted"]


def test_expire_turns_old_pending_into_revert(store) -> None:
    oldest, newest = approvals.pending(store)
    assert approvals.expire(store, NOW, timeout_s=3600) == [oldest.id]
    assert acted(store, "r5") == ["expired-reverted"]
    assert acted(store, "r4") == ["pending"]
    later = NOW + timedelta(hours=1)
    assert approvals.expire(store, later, timeout_s=3600) == [newest.id]
    assert approvals.pending(store) == []
    with sqlite3.connect(store.path) as conn:
        kinds = [row[0] for row in conn.execute("select kind from events")]
    assert kinds == ["approval-expired-reverted", "approval-expired-reverted"]
