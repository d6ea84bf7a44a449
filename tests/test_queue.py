"""The experiment queue: order, due times, `--experiment` winning, the empty queue
as a clean exit, and rechecks of kept changes after RECHECK_DAYS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smart_tui import queue
from smart_tui.commands import _choose_experiment
from smart_tui.errors import ExitCode, NothingToDo
from smart_tui.settings import Settings
from smart_tui.storage import Store

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ["001_nginx_workers", "002_proxy_cache", "003_gzip_max"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    (tmp_path / "smart.conf").write_text("RECHECK_DAYS=30\n")
    return Settings(base_dir=tmp_path, recheck_days=30)


def days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")


def add_run(
    store: Store, run_id: str, experiment_id: str, outcome: str, age_d: float
) -> None:
    store.start_run(run_id, experiment_id, trigger="test", pid=1, host="h", settings={})
    kept = "on" if outcome == "KEEP" else None
    store.finish_run(run_id, status="done", outcome=outcome, kept_variant=kept)
    with store.db.conn:
        store.db.execute(
            "update runs set started_at = ?, finished_at = ? where id = ?",
            [days_ago(age_d + 0.01), days_ago(age_d), run_id],
        )


def smart(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMART_")}
    env["SMART_CONFIG"] = str(settings.base_dir / "smart.conf")
    return subprocess.run(
        [sys.executable, "-m", "smart_tui", *args],
        cwd=settings.base_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_items_run_in_the_order_added_and_each_is_taken_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "smart.db")
    for experiment_id in ["003_gzip_max", "001_nginx_workers", "002_proxy_cache"]:
        queue.add(store, experiment_id)
    middle = queue.items(store)[1]
    queue.remove(store, middle.id)
    queue.add(store, "001_nginx_workers")

    taken = []
    while (item := queue.take_next_due(store)) is not None:
        taken.append(item.experiment_id)

    assert taken == ["003_gzip_max", "002_proxy_cache", "001_nginx_workers"]
    assert queue.items(store) == []


def test_an_item_waits_until_its_time(tmp_path: Path) -> None:
    store = Store(tmp_path / "smart.db")
    later = queue.normalise_time("2999-01-01T00:00")
    queue.add(store, "001_nginx_workers", not_before=later)
    queue.add(store, "002_proxy_cache")

    first = queue.take_next_due(store)
    second = queue.take_next_due(store)

    assert first is not None and first.experiment_id == "002_proxy_cache"
    assert second is None
    assert [item.experiment_id for item in queue.items(store)] == ["001_nginx_workers"]
    assert later == "2999-01-01T00:00:00+00:00"


def test_bad_queue_input_is_one_line_with_the_fix(tmp_path: Path) -> None:
    store = Store(tmp_path / "smart.db")
    with pytest.raises(queue.QueueError, match="no queue item 7; `smart-tui queue"):
        queue.remove(store, 7)
    with pytest.raises(queue.QueueError, match="not an ISO 8601 time"):
        queue.normalise_time("tomorrow")


def test_the_queue_decides_the_next_run_and_experiment_wins(settings: Settings) -> None:
    store = Store(settings.database_path)
    queue.add(store, "002_proxy_cache")
    queue.add(store, "003_gzip_max")
    store.close()

    explicit, why_explicit = _choose_experiment(settings, "001_nginx_workers")
    queued, why_queued = _choose_experiment(settings, None)

    assert (explicit.id, why_explicit) == ("001_nginx_workers", "cli")
    assert (queued.id, why_queued) == ("002_proxy_cache", "queue")
    store = Store(settings.database_path)
    assert [item.experiment_id for item in queue.items(store)] == ["003_gzip_max"]


def test_an_empty_queue_is_a_clean_exit_that_says_so(settings: Settings) -> None:
    with pytest.raises(NothingToDo, match="the queue is empty"):
        _choose_experiment(settings, None)

    result = smart(settings, "--run-once")

    assert result.returncode == ExitCode.NOTHING_TO_DO
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "smart-tui: nothing to do: the queue is empty and no kept change is older "
        "than RECHECK_DAYS=30; add one with `smart-tui queue add ID`"
    ]


def test_a_kept_change_is_rechecked_after_recheck_days(settings: Settings) -> None:
    store = Store(settings.database_path)
    add_run(store, "old-keep", "002_proxy_cache", "KEEP", age_d=40)
    add_run(store, "recent-keep", "001_nginx_workers", "KEEP", age_d=5)
    add_run(store, "keep-then-revert-1", "003_gzip_max", "KEEP", age_d=60)
    add_run(store, "keep-then-revert-2", "003_gzip_max", "REVERT", age_d=50)

    due = queue.recheck_due(store, SHIPPED, recheck_days=30)
    chosen, why = _choose_experiment(settings, None)

    assert due is not None
    assert (due.experiment_id, due.kept_variant) == ("002_proxy_cache", "on")
    assert (chosen.id, why) == ("002_proxy_cache", "recheck")
    assert queue.recheck_due(store, SHIPPED, recheck_days=0) is None
    assert queue.recheck_due(store, SHIPPED, recheck_days=45) is None
    # A queued item still comes before a recheck.
    queue.add(store, "003_gzip_max")
    assert _choose_experiment(settings, None)[1] == "queue"


def test_queue_commands(settings: Settings) -> None:
    added = smart(settings, "queue", "add", "002_proxy_cache", "001_nginx_workers")
    unknown = smart(settings, "queue", "add", "999_nope")
    listed = smart(settings, "queue", "list")
    removed = smart(settings, "queue", "remove", "1")
    missing = smart(settings, "queue", "remove", "42")
    cleared = smart(settings, "queue", "clear")
    empty = smart(settings, "queue", "list")

    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == [
        "queued #1: 002_proxy_cache",
        "queued #2: 001_nginx_workers",
    ]
    assert unknown.returncode == ExitCode.BAD_EXPERIMENT
    assert "no experiment '999_nope'" in unknown.stderr
    assert listed.stdout.splitlines() == [
        "  1. #1     002_proxy_cache",
        "  2. #2     001_nginx_workers",
    ]
    assert removed.stdout.strip() == "removed #1: 002_proxy_cache"
    assert missing.returncode == ExitCode.USAGE
    assert missing.stderr.startswith("smart-tui: queue: no queue item 42")
    assert cleared.stdout.strip() == "removed 1 item(s); the queue is empty"
    assert "the queue is empty" in empty.stdout
