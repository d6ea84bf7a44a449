"""Experiment scripts: output captured, timeouts kill the whole group, and a script
that leaves a daemon behind is finished when it exits."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from smart_tui.scripts import run_command


def test_script_leaving_a_background_child_is_done_when_it_exits(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    result = run_command(
        "echo applied; sleep 30 & echo $! > child.pid",
        cwd=tmp_path,
        env={},
        timeout_s=10,
    )
    assert result.ok and result.output == "applied\n"
    assert time.monotonic() - started < 5
    psutil.Process(int((tmp_path / "child.pid").read_text())).kill()


def test_timeout_kills_the_group_and_names_the_setting(tmp_path: Path) -> None:
    result = run_command(
        "sleep 30 & echo $! > child.pid; echo waiting; sleep 30",
        cwd=tmp_path,
        env={},
        timeout_s=0.5,
    )
    assert result.timed_out and result.returncode is None
    assert result.describe().startswith("`sleep 30 & echo $! > child.pid;")
    assert "raise SCRIPT_TIMEOUT_SECONDS in smart.conf" in result.describe()
    child = int((tmp_path / "child.pid").read_text())
    time.sleep(0.2)
    assert not psutil.pid_exists(child) or (
        psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    )


def test_environment_and_folder_reach_the_script(tmp_path: Path) -> None:
    result = run_command(
        'echo "$SMART_VARIANT in $(pwd)"; exit 4',
        cwd=tmp_path,
        env={"SMART_VARIANT": "on"},
        timeout_s=5,
    )
    assert result.returncode == 4
    assert (
        result.describe()
        == f'`echo "$SMART_VARIANT in $(pwd)"; exit 4` exited 4: on in {tmp_path}'
    )
