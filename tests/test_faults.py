"""Never strand a bad config: SIGKILL at each point of the run cycle, then start the
next command and check the server, the config and the record."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from support.cli import with_earlier_run, workspace

from smart_tui.lab import LabInfo

REPO = Path(__file__).resolve().parent.parent
SHORT = [
    "--run-once",
    "--experiment",
    "003_gzip_max",
    "--baseline-seconds",
    "2",
    "--experiment-seconds",
    "6",
    "--settle-seconds",
    "1",
    "--set",
    "WARMUP_SECONDS=0.5",
]


def run(
    base: Path, *args: str, timeout_s: float = 90
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMART_")}
    env["SMART_CONFIG"] = str(base / "smart.conf")
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, *args],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def gzip_is_live(lab: LabInfo) -> bool:
    request = urllib.request.Request(
        lab.url + "/big/data.json", headers={"Accept-Encoding": "gzip"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        response.read()
        return response.headers.get("Content-Encoding") == "gzip"


def probes_left(base: Path) -> list[psutil.Process]:
    """Probe load processes started from this test's folder (others may run)."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = process.info["cmdline"] or []
        if "smart_tui.probe" in cmdline and process.info["cwd"] == str(base):
            found.append(process)
    return found


@pytest.fixture
def base(tmp_path: Path, lab: LabInfo) -> Path:
    return with_earlier_run(workspace(tmp_path, "PROBE_RATE_RPS=100\n"))


# point -> how the run is recorded afterwards
FAULTS = {
    "after-journal": "ABORTED",
    "after-apply": "ABORTED",
    "mid-settle": "ABORTED",
    "mid-measure": "ABORTED",
    "mid-decision": "ABORTED",
    "mid-revert": "ABORTED",
    "database-write": "ABORTED",
    # The run was recorded as done (REVERT) before the page was written.
    "dashboard-write": "REVERT",
}


@pytest.mark.parametrize("point", list(FAULTS))
def test_sigkill_ends_on_baseline_with_the_run_recorded(
    point: str, base: Path, lab: LabInfo
) -> None:
    baseline_conf = lab.nginx_conf.read_bytes()

    killed = run(base, "-m", "tests.support.kill_at", point, "--", *SHORT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    # The probe's load process must not outlive a killed runner.
    deadline = time.monotonic() + 10
    while probes_left(base):
        assert time.monotonic() < deadline, "probe process left running"
        time.sleep(0.2)

    following = run(base, "-m", "smart_tui", "list")
    assert following.returncode == 0, following.stderr
    assert "Traceback" not in following.stderr

    assert lab.nginx_conf.read_bytes() == baseline_conf
    test = subprocess.run([*lab.nginx_cmd, "-t"], capture_output=True, check=False)
    assert test.returncode == 0
    assert not gzip_is_live(lab)
    assert not (base / "var" / "journal.json").exists()

    conn = sqlite3.connect(base / "var" / "smart.db")
    rows = dict(conn.execute("select id, outcome from runs").fetchall())
    assert rows.pop("earlier-run") == "REVERT"
    assert list(rows.values()) == [FAULTS[point]]
    if FAULTS[point] == "ABORTED":
        assert "recovered run" in following.stderr
        events = conn.execute("select kind from events").fetchall()
        assert ("recovered",) in events


def test_recover_command_says_what_it_found(base: Path, lab: LabInfo) -> None:
    nothing = run(base, "-m", "smart_tui", "recover")
    assert nothing.stdout.strip() == "nothing to recover: no run was interrupted"

    killed = run(base, "-m", "tests.support.kill_at", "after-apply", "--", *SHORT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert gzip_is_live(lab)
    journal = json.loads((base / "var" / "journal.json").read_text())

    found = run(base, "-m", "smart_tui", "recover")

    assert found.returncode == 0
    assert found.stdout.startswith(f"recovered run {journal['run_id']} of 003_gzip_max")
    assert str(lab.nginx_conf) in found.stdout
    assert not gzip_is_live(lab)
