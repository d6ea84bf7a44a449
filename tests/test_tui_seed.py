"""Deterministic data for the TUI tests: a workspace with experiments (one broken)
and a database of runs, decisions and per-second figures at fixed timestamps.
Imported by the other ``test_tui*`` modules; its own tests check the seed."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from smart_tui.coach.records import StoredAdvice, save_advice
from smart_tui.config import load_settings
from smart_tui.settings import Settings
from smart_tui.storage import Store
from smart_tui.tui import model

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
CONF = """\
# smart.conf for the TUI tests
BASELINE_SECONDS=300   # kept comment
APPROVAL=manual        # a human answers
APPROVAL_TIMEOUT_SECONDS=3600
"""


def fixed_clock() -> datetime:
    return NOW


def write_experiment(
    root: Path, name: str, description: str, variants: list[str]
) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    meta = {
        "id": name,
        "description": description,
        "variants": [{"name": "baseline", "apply": "true"}]
        + [{"name": v, "apply": f"./apply.sh {v}"} for v in variants],
        "revert": "./revert.sh",
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    (folder / "apply.sh").write_text("#!/bin/sh\necho apply $1\n")


def make_workspace(base: Path) -> Path:
    """``base/smart.conf``, ``base/experiments`` (3 valid, 1 broken); returns conf."""
    if base.exists():
        shutil.rmtree(base)
    experiments = base / "experiments"
    write_experiment(experiments, "001_workers", "More nginx workers", ["auto"])
    write_experiment(experiments, "002_proxy_cache", "Cache proxy answers", ["on"])
    write_experiment(experiments, "003_gzip", "Gzip at level 9", ["max", "mid"])
    broken = experiments / "004_broken"
    broken.mkdir()
    (broken / "meta.json").write_text('{"id": "004_broken", "variants": [}')
    (base / "smart.conf").write_text(CONF)
    return base / "smart.conf"


def settings_for(conf: Path, **overrides: str) -> Settings:
    return load_settings(config_path=conf, overrides=overrides, environ={})


def _seconds(p50: float, count: int) -> list[tuple[int, dict[str, object], None]]:
    return [
        (
            second,
            {
                "intended": 100,
                "sent": 100,
                "achieved_rps": 100.0,
                "p50_ms": p50 + (second % 3) * 0.5,
                "p99_ms": p50 * 3 + (second % 4),
                "status_5xx": 0,
                "conn_errors": 0,
                "timeouts": 0,
            },
            None,
        )
        for second in range(count)
    ]


def add_run(
    store: Store,
    run_id: str,
    experiment_id: str,
    started_at: str,
    decisions: list[tuple[str, str, str]],
    *,
    outcome: str,
    kept: str | None = None,
) -> None:
    """One finished run with a baseline window and a window and a decision per
    ``(variant, decision, acted)``, every timestamp pinned to ``started_at``."""
    store.start_run(
        run_id, experiment_id, trigger="timer", pid=1, host="h", settings={}
    )
    store.add_window(run_id, "baseline", "baseline", _summary(20.0), _seconds(20, 8))
    for variant, decision, acted in decisions:
        p50 = 8.0 if decision == "KEEP" else 21.0
        store.add_window(run_id, variant, "variant", _summary(p50), _seconds(p50, 8))
        store.add_decision(
            run_id,
            variant,
            decision,
            policy="stats",
            reasons=[f"p99 {'fell' if decision == 'KEEP' else 'did not fall'} enough"],
            details={"effect": {"ratio": 0.4}},
            acted=acted,
        )
    store.finish_run(run_id, status="done", outcome=outcome, kept_variant=kept)
    with store.db.conn:
        for table, column in (("runs", "started_at"), ("runs", "finished_at")):
            store.db.execute(
                f"update {table} set {column} = ? where id = ?", [started_at, run_id]
            )
        store.db.execute(
            "update decisions set decided_at = ? where run_id = ?", [started_at, run_id]
        )
        store.db.execute(
            "update windows set started_at = ? where run_id = ?", [started_at, run_id]
        )


def _summary(p50: float) -> dict[str, float]:
    return {
        "p50_ms": p50,
        "p99_ms": p50 * 3,
        "error_pct": 0.0,
        "intended_rps": 100.0,
        "achieved_rps": 99.5,
        "requests": 800,
    }


def add_advice(store: Store, run_id: str, status: str, **fields: str) -> None:
    save_advice(
        store,
        StoredAdvice(
            **{
                "run_id": run_id,
                "asked_at": "2026-12-04T11:31:00+00:00",
                "source": "api",
                "status": status,
                "advice": "",
                "variant": "",
                "note": "",
                "reason": "",
                "recommendation": "none",
                "elapsed_ms": 140,
                **fields,
            }
        ),
    )


def seed_database(path: Path) -> None:
    """Five runs: kept, reverted, inconclusive, and two pending decisions, one of
    them older than the test timeout (3600 s) so it expires. The coach agreed
    with the pending one and timed out on the inconclusive one."""
    store = Store(path)
    try:
        add_run(
            store, "r1", "001_workers", "2026-12-01T09:00:00+00:00",
            [("auto", "KEEP", "kept")], outcome="KEEP", kept="auto",
        )  # fmt: skip
        add_run(
            store, "r2", "003_gzip", "2026-12-02T09:00:00+00:00",
            [("max", "REVERT", "reverted"), ("mid", "INCONCLUSIVE", "reverted")],
            outcome="INCONCLUSIVE",
        )  # fmt: skip
        add_run(
            store, "r3", "001_workers", "2026-12-03T09:00:00+00:00",
            [("auto", "REVERT", "reverted")], outcome="REVERT",
        )  # fmt: skip
        add_run(
            store, "r4", "002_proxy_cache", "2026-12-04T11:30:00+00:00",
            [("on", "KEEP", "pending")], outcome="PENDING",
        )  # fmt: skip
        add_run(
            store, "r5", "003_gzip", "2026-12-04T10:00:00+00:00",
            [("max", "KEEP", "pending")], outcome="PENDING",
        )  # fmt: skip
        add_advice(store, "r4", "ok", advice="agree", note="p50 fell 60%, no errors")
        add_advice(store, "r2", "failed", reason="timed out after 10 s")
    finally:
        store.close()


def seeded(base: Path, **overrides: str) -> Settings:
    conf = make_workspace(base)
    settings = settings_for(conf, **overrides)
    seed_database(settings.database_path)
    return settings


def test_seed_shows_every_status(tmp_path: Path) -> None:
    settings = seeded(tmp_path / "ws")
    from smart_tui.experiments import discover

    store = Store(settings.database_path)
    try:
        rows = model.experiment_rows(discover(settings.experiments_path), store)
        decisions = model.decision_rows(store)
    finally:
        store.close()
    assert [(row.id, row.status) for row in rows] == [
        ("001_workers", "idle"),
        ("002_proxy_cache", "pending"),
        ("003_gzip", "pending"),
        ("004_broken", "broken"),
    ]
    assert rows[0].last_outcome == "REVERT"
    assert "malformed JSON" in rows[3].error
    assert [row.run_id for row in decisions] == ["r4", "r5", "r3", "r2", "r1"]
