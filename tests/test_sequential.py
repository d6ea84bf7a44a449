"""Decisions while the variant is measured, against the real lab: a clear win ends
the window early, and a backend that starts failing is rolled back within seconds."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from support.cli import smart_background, workspace

from smart_tui.lab import Lab, LabInfo
from smart_tui.records import Samples
from smart_tui.sequential import expected_variant_samples


@pytest.fixture
def base(tmp_path: Path, lab: LabInfo) -> Path:
    workspace(tmp_path, "PROBE_RATE_RPS=150\n")
    # 001's change, measured on the proxied backend instead of a static file.
    workers_app = tmp_path / "experiments" / "095_workers_app"
    shutil.copytree(tmp_path / "experiments" / "001_nginx_workers", workers_app)
    meta = json.loads((workers_app / "meta.json").read_text())
    meta.update(id="095_workers_app", target_url="/app/item", measure_interval_sec=2)
    (workers_app / "meta.json").write_text(json.dumps(meta))
    return tmp_path


def decision_row(base: Path) -> sqlite3.Row:
    conn = sqlite3.connect(base / "var" / "smart.db")
    conn.row_factory = sqlite3.Row
    row = conn.execute("select * from decisions").fetchone()
    assert row is not None
    return row


def test_clear_win_stops_early_with_keep(base: Path) -> None:
    started = time.monotonic()
    run = smart_background(
        base,
        "--run-once",
        "--experiment",
        "002_proxy_cache",
        "--baseline-seconds",
        "5",
        "--experiment-seconds",
        "40",
        "--settle-seconds",
        "1",
    )
    stdout, stderr = run.communicate(timeout=120)
    elapsed_s = time.monotonic() - started

    assert run.returncode == 0, stderr
    assert "outcome:    KEEP" in stdout
    assert elapsed_s < 35, "the 40 s variant window should have ended early"
    decision = decision_row(base)
    assert decision["decision"] == "KEEP"
    reasons = json.loads(decision["reasons"])
    assert any(r.startswith("sequential stop after") for r in reasons), reasons


def test_guardrail_reverts_a_failing_variant_within_seconds(
    base: Path, lab: LabInfo
) -> None:
    baseline_conf = lab.nginx_conf.read_bytes()
    run = smart_background(
        base,
        "--run-once",
        "--experiment",
        "095_workers_app",
        "--baseline-seconds",
        "5",
        "--experiment-seconds",
        "60",
        "--settle-seconds",
        "1",
    )
    deadline = time.monotonic() + 30
    while lab.nginx_conf.read_bytes() == baseline_conf:
        assert time.monotonic() < deadline, "the variant was never applied"
        time.sleep(0.1)
    time.sleep(2.5)  # past the settle second, into the scored window

    Lab(base / "var").set_backend(error_pct=30)
    failing_since = time.monotonic()
    stdout, stderr = run.communicate(timeout=90)
    reverted_after_s = time.monotonic() - failing_since

    assert run.returncode == 0, stderr
    assert "outcome:    REVERT" in stdout
    assert reverted_after_s < 15, f"guardrail took {reverted_after_s:.1f} s"
    assert lab.nginx_conf.read_bytes() == baseline_conf
    decision = decision_row(base)
    assert decision["decision"] == "REVERT"
    reasons = json.loads(decision["reasons"])
    assert any(r.startswith("guardrail stop after") for r in reasons), reasons
    assert any("5xx" in r for r in reasons), reasons


def _samples(rate_rps: float, seconds: float) -> Samples:
    t_s = np.arange(0, seconds, 1 / rate_rps)
    return Samples(
        latencies_ms=np.full(t_s.size, 5.0),
        errors=np.zeros(t_s.size, dtype=bool),
        t_s=t_s,
        conn_errors=0,
    )


def test_looks_are_sized_by_the_traffic_a_passive_source_saw() -> None:
    """The access log holds the server's real traffic (40/s here), not the probe's
    PROBE_RATE_RPS (100/s): planning looks for 100/s would keep them too early."""
    base = _samples(40, 60)

    from_log = expected_variant_samples("access_log", 100, 300, base)
    from_probe = expected_variant_samples("probe", 100, 300, base)

    assert abs(from_log - 40 * 300) <= 40 * 300 * 0.01
    assert from_probe == 100 * 300
    assert expected_variant_samples("access_log", 100, 300, _samples(40, 0.01)) == (
        100 * 300  # one sample: no rate to go by, so the plan stands
    )
