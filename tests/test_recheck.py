"""A change kept long ago is re-tested from the baseline: it must win again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from support.cli import short_windows, smart, workspace

from smart_tui.lab import LabInfo

FAST = short_windows(4, 4, 1)


def test_old_kept_change_is_rechecked_from_the_baseline(
    tmp_path: Path, lab: LabInfo
) -> None:
    workspace(tmp_path, "PROBE_RATE_RPS=150\nRECHECK_DAYS=30\n")
    first = smart(tmp_path, "--run-once", "--experiment", "002_proxy_cache", *FAST)
    assert "outcome:    KEEP" in first.stdout, first.stderr
    kept_conf = lab.nginx_conf.read_bytes()

    # Age the kept run past RECHECK_DAYS.
    with sqlite3.connect(tmp_path / "var" / "smart.db") as conn:
        conn.execute(
            "update runs set started_at = '2026-01-01T00:00:00+00:00', "
            "finished_at = '2026-01-01T00:05:00+00:00'"
        )

    again = smart(tmp_path, "--run-once", *FAST)

    assert again.returncode == 0, again.stderr
    assert "experiment: 002_proxy_cache" in again.stdout
    assert "outcome:    KEEP" in again.stdout
    assert "recheck: reverting the kept variant before measuring" in again.stderr
    # Measured from the real baseline (slow backend), then the winner is back.
    with sqlite3.connect(tmp_path / "var" / "smart.db") as conn:
        rows = conn.execute(
            "select w.summary from windows w join runs r on r.id = w.run_id "
            "where r.trigger = 'run-once:recheck' and w.role = 'baseline'"
        ).fetchall()
    assert len(rows) == 1 and '"p50_ms": 2' in rows[0][0]
    assert lab.nginx_conf.read_bytes() == kept_conf


def test_running_a_kept_experiment_again_starts_from_the_baseline(
    tmp_path: Path, lab: LabInfo
) -> None:
    workspace(tmp_path, "PROBE_RATE_RPS=150\n")
    first = smart(tmp_path, "--run-once", "--experiment", "002_proxy_cache", *FAST)
    assert "outcome:    KEEP" in first.stdout, first.stderr

    second = smart(tmp_path, "--run-once", "--experiment", "002_proxy_cache", *FAST)

    assert second.returncode == 0, second.stderr
    assert "outcome:    KEEP" in second.stdout
    assert "recheck: reverting the kept variant before measuring" in second.stderr


def test_a_recheck_whose_revert_changes_nothing_is_not_measured(
    tmp_path: Path, lab: LabInfo
) -> None:
    """The kept change's backup is gone (an older install named it differently):
    measuring the variant as its own baseline would prove nothing."""
    workspace(tmp_path, "PROBE_RATE_RPS=150\n")
    first = smart(tmp_path, "--run-once", "--experiment", "002_proxy_cache", *FAST)
    assert "outcome:    KEEP" in first.stdout, first.stderr
    kept_conf = lab.nginx_conf.read_bytes()
    for backup in lab.nginx_conf.parent.glob("*.smart-bak*"):
        backup.rename(lab.nginx_conf.with_name("nginx.conf.smart-bak"))

    again = smart(tmp_path, "--run-once", "--experiment", "002_proxy_cache", *FAST)

    assert again.returncode == 5, again.stderr
    assert "the recheck's revert changed no watched file" in again.stderr
    assert lab.nginx_conf.read_bytes() == kept_conf
    with sqlite3.connect(tmp_path / "var" / "smart.db") as conn:
        last = conn.execute(
            "select status, outcome from runs order by started_at desc limit 1"
        ).fetchone()
    assert last == ("failed", "APPLY_FAILED")
