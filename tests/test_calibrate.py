"""`smart-tui calibrate`: an A/A run on the real lab that changes nothing and plans
the window length."""

from __future__ import annotations

import re
from pathlib import Path

from support.cli import smart, workspace

from smart_tui.lab import LabInfo


def test_calibrate_plans_windows_and_changes_nothing(
    tmp_path: Path, lab: LabInfo
) -> None:
    workspace(tmp_path, "PROBE_RATE_RPS=200\nWARMUP_SECONDS=0.5\n")
    before = lab.nginx_conf.read_bytes()

    done = smart(
        tmp_path,
        *("calibrate", "--experiment", "001_nginx_workers", "--baseline-seconds", "3"),
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("calibration of 001_nginx_workers (http://127.0.0.1:")
    assert "at 200 req/s" in lines[0]
    plans = [line for line in lines if line.startswith("to KEEP a true 20% gain")]
    assert len(plans) == 2
    needed = [int(re.search(r": (\d+) samples per arm", p)[1]) for p in plans]
    assert "80% power" in plans[0] and "95% power" in plans[1]
    assert 200 <= needed[0] <= needed[1]
    assert lab.nginx_conf.read_bytes() == before
