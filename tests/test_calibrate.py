"""`smart-tui calibrate`: an A/A run on the real lab that changes nothing and plans
the window length."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from smart_tui.lab import LabInfo

REPO = Path(__file__).resolve().parent.parent


def test_calibrate_plans_windows_and_changes_nothing(
    tmp_path: Path, lab: LabInfo
) -> None:
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    (tmp_path / "smart.conf").write_text("PROBE_RATE_RPS=200\nWARMUP_SECONDS=0.5\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMART_")}
    env["SMART_CONFIG"] = str(tmp_path / "smart.conf")
    before = lab.nginx_conf.read_bytes()

    done = subprocess.run(
        [
            *(sys.executable, "-m", "smart_tui", "calibrate"),
            *("--experiment", "001_nginx_workers", "--baseline-seconds", "3"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
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
