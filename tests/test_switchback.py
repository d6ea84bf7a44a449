"""Switchback: alternating baseline and variant blocks against the real lab."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
from support.cli import smart, workspace

from smart_tui.lab import LabInfo
from smart_tui.records import Samples, combine


def test_combine_puts_blocks_on_one_clock() -> None:
    block = Samples(
        latencies_ms=np.array([1.0, 2.0]),
        errors=np.array([False, True]),
        t_s=np.array([0.0, 0.5]),
        conn_errors=1,
    )

    arm = combine([(0.0, block), (10.0, block)])

    assert arm.t_s.tolist() == [0.0, 0.5, 10.0, 10.5]
    assert arm.latencies_ms.tolist() == [1.0, 2.0, 1.0, 2.0]
    assert arm.errors.sum() == 2 and arm.conn_errors == 2


def test_switchback_alternates_blocks_and_keeps_a_clear_win(
    tmp_path: Path, lab: LabInfo
) -> None:
    workspace(tmp_path, "PROBE_RATE_RPS=150\nSWITCHBACK_BLOCKS=2\n")
    baseline_conf = lab.nginx_conf.read_bytes()

    done = smart(
        tmp_path,
        "--run-once",
        *("--experiment", "002_proxy_cache", "--settle-seconds", "1"),
        *("--baseline-seconds", "6", "--experiment-seconds", "6"),
    )

    assert done.returncode == 0, done.stderr
    assert "outcome:    KEEP" in done.stdout
    assert lab.nginx_conf.read_bytes() != baseline_conf  # the winner stays live
    conn = sqlite3.connect(tmp_path / "var" / "smart.db")
    roles = [row[0] for row in conn.execute("select role from windows order by id")]
    assert roles == ["baseline", "variant", "baseline", "variant"]
    reasons = json.loads(conn.execute("select reasons from decisions").fetchone()[0])
    assert "switchback: 2 of 2 block pairs measured" in reasons
    phases = [row[0] for row in conn.execute("select name from phases order by id")]
    assert phases.count("apply") == 2 and phases.count("revert") == 1
