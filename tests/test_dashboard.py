"""The static dashboard: what a reader sees, escaping, and the atomic write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from smart_tui.coach.records import new_advice, save_advice
from smart_tui.dashboard import write_dashboard
from smart_tui.storage import Store


def seeded_store(path: Path, experiment_id: str = "002_proxy_cache") -> Store:
    store = Store(path)
    store.start_run(
        "r1", experiment_id, trigger="test", pid=1, host="h", settings={"A": "1"}
    )
    summary = {
        "requests": 600,
        "p50_ms": 21.5,
        "p99_ms": 30.25,
        "error_pct": 0.0,
        "intended_rps": 150.0,
        "achieved_rps": 149.6,
    }
    store.add_window("r1", "baseline", "baseline", summary, [], None)
    store.add_window(
        "r1", "cache_on", "variant", {**summary, "p50_ms": 0.42, "error_pct": 0.5}, []
    )
    store.add_decision(
        "r1",
        "cache_on",
        "KEEP",
        policy="stats",
        reasons=["p50 -98% [-99%, -97%] at 95%: clears 10%"],
        details={},
        acted="kept",
    )
    store.finish_run("r1", status="done", outcome="KEEP", kept_variant="cache_on")
    return store


def test_page_shows_the_run_numbers_and_reasons(tmp_path: Path) -> None:
    store = seeded_store(tmp_path / "smart.db")

    page = write_dashboard(store, tmp_path / "www").read_text()

    assert '<meta http-equiv="refresh" content="30">' in page
    assert 'name="viewport"' in page
    assert "<script" not in page
    assert '<strong class="experiment">002_proxy_cache</strong>' in page
    assert '<strong class="kept">cache_on</strong>' in page
    assert "21.50" in page and "0.42" in page and "0.50" in page
    assert "150 / 150 req/s" in page
    assert "p50 -98% [-99%, -97%] at 95%: clears 10%" in page


def test_hostile_names_are_shown_as_text(tmp_path: Path) -> None:
    store = seeded_store(tmp_path / "smart.db", "<script>alert(1)</script>")

    page = write_dashboard(store, tmp_path / "www").read_text()

    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_empty_record_says_how_to_start(tmp_path: Path) -> None:
    page = write_dashboard(Store(tmp_path / "smart.db"), tmp_path / "www").read_text()
    assert "No runs yet" in page


def test_rewrite_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = seeded_store(tmp_path / "smart.db")
    www = tmp_path / "www"
    write_dashboard(store, www)
    write_dashboard(store, www)
    assert sorted(p.name for p in www.iterdir()) == ["index.html"]
    assert (www / "index.html").stat().st_mode & 0o777 == 0o644


def advise(store: Store, run_id: str, **fields: str) -> None:
    advice = new_advice(run_id, source="api", status="ok", elapsed_s=0.12, **fields)
    save_advice(store, advice)


def test_coach_advice_is_shown_per_run(tmp_path: Path) -> None:
    store = seeded_store(tmp_path / "smart.db")
    advise(store, "r1", advice="rerun_later", note="first answer")
    advise(store, "r1", advice="agree", note="the cache clearly helps")

    page = write_dashboard(store, tmp_path / "www").read_text()

    # The latest answer, in the run's card and in its history row; never the older.
    assert page.count("coach: agree: the cache clearly helps") == 2
    assert "first answer" not in page


def test_coach_that_failed_or_was_not_asked_says_so(tmp_path: Path) -> None:
    store = seeded_store(tmp_path / "smart.db")
    page = write_dashboard(store, tmp_path / "www").read_text()
    assert '<p class="coach">Coach: not asked</p>' in page

    save_advice(
        store,
        new_advice("r1", source="api", status="failed", reason="timed out after 5 s"),
    )
    page = write_dashboard(store, tmp_path / "www").read_text()
    assert "coach failed: timed out after 5 s" in page


def test_hostile_advice_note_is_shown_as_text(tmp_path: Path) -> None:
    store = seeded_store(tmp_path / "smart.db")
    advise(store, "r1", advice="agree", note='<img src=x onerror="alert(1)">')

    page = write_dashboard(store, tmp_path / "www").read_text()

    assert "<img" not in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page


def test_dashboard_command_names_an_unwritable_folder(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    (tmp_path / "smart.conf").write_text("WWW_DIR=not-a-folder/www\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMART_")}
    env["SMART_CONFIG"] = str(tmp_path / "smart.conf")

    done = subprocess.run(
        [sys.executable, "-m", "smart_tui", "dashboard"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 13
    assert done.stderr.strip() == (
        f"smart-tui: output failed: cannot write {tmp_path}/not-a-folder/www/"
        "index.html: Not a directory; make WWW_DIR writable by this user or point "
        "WWW_DIR elsewhere in smart.conf"
    )
