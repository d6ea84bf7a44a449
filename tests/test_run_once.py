"""`smart-tui --run-once` end to end against the real lab nginx: what an operator sees
on the terminal, in the database, the run folder and the dashboard, and which config
nginx is left on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.cli import add_faulty_experiment, short_windows

from smart_tui.errors import ExitCode
from smart_tui.lab import Lab, LabInfo

REPO = Path(__file__).resolve().parent.parent
SMART = [sys.executable, "-m", "smart_tui"]

# Short windows: long enough for several hundred requests per arm at the lab's rate.
FAST = short_windows(4, 4, 1, warmup_s=0.5)


@dataclass
class Workspace:
    """A BASE_DIR with its own smart.conf, experiments and var/ (holding the lab)."""

    base: Path
    lab: LabInfo

    def smart(
        self, *args: str, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SMART, *args],
            cwd=self.base,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMART_")}
        env.pop("COACH_TOKEN", None)
        env.pop("COACH_URL", None)
        env["SMART_CONFIG"] = str(self.base / "smart.conf")
        return env

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.base / "var" / "smart.db")
        conn.row_factory = sqlite3.Row
        return conn

    def conf_bytes(self) -> bytes:
        return self.lab.nginx_conf.read_bytes()

    def nginx_test(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.lab.nginx_cmd, "-t"], capture_output=True, text=True, check=False
        )


@pytest.fixture
def workspace(tmp_path: Path, lab: LabInfo) -> Workspace:
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    (tmp_path / "smart.conf").write_text(
        "# test workspace\nPROBE_RATE_RPS=150\nDECISION_POLICY=stats\n"
    )
    return Workspace(base=tmp_path, lab=lab)


def add_experiment(ws: Workspace, name: str, apply: str, revert: str) -> None:
    add_faulty_experiment(ws.base, name, apply, revert)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()
        return response.status, dict(response.headers)


def test_proxy_cache_is_kept_and_recorded(workspace: Workspace) -> None:
    baseline_conf = workspace.conf_bytes()

    done = workspace.smart("--run-once", "--experiment", "002_proxy_cache", *FAST)

    assert done.returncode == ExitCode.OK, done.stderr
    assert "outcome:    KEEP" in done.stdout
    assert "kept:       cache_on" in done.stdout
    assert "Traceback" not in done.stderr

    # The variant stays live: config changed, valid, and answering from the cache.
    assert workspace.conf_bytes() != baseline_conf
    assert workspace.nginx_test().returncode == 0

    with workspace.db() as conn:
        run = conn.execute("select * from runs").fetchone()
        assert (run["status"], run["outcome"], run["kept_variant"]) == (
            "done",
            "KEEP",
            "cache_on",
        )
        windows = conn.execute("select * from windows order by id").fetchall()
        assert [(w["role"], w["variant"]) for w in windows] == [
            ("baseline", "baseline"),
            ("variant", "cache_on"),
        ]
        base_p50 = json.loads(windows[0]["summary"])["p50_ms"]
        variant_p50 = json.loads(windows[1]["summary"])["p50_ms"]
        assert variant_p50 < base_p50 / 2
        decision = conn.execute("select * from decisions").fetchone()
        assert (decision["decision"], decision["acted"]) == ("KEEP", "kept")
        assert json.loads(decision["reasons"])
        seconds = conn.execute("select count(*) from seconds").fetchone()[0]
        assert seconds >= 8
        phases = [p["name"] for p in conn.execute("select name from phases")]
        assert phases == ["baseline", "apply", "measure"]

    run_dir = workspace.base / "var" / "runs" / run["id"]
    log_text = (run_dir / "run.log").read_text()
    assert "baseline baseline:" in log_text and "./apply.sh on" in log_text
    csv_lines = (run_dir / "measurements.csv").read_text().splitlines()
    assert csv_lines[0].startswith("role,variant,second,intended,sent")
    assert len(csv_lines) > 8

    page = (workspace.base / "www" / "index.html").read_text()
    assert "002_proxy_cache" in page and run["id"] in page
    assert 'class="KEEP"' in page and "cache_on" in page
    assert 'http-equiv="refresh" content="30"' in page


def test_gzip_max_is_reverted_to_identical_bytes(workspace: Workspace) -> None:
    baseline_conf = workspace.conf_bytes()

    done = workspace.smart("--run-once", "--experiment", "003_gzip_max", *FAST)

    assert done.returncode == ExitCode.OK, done.stderr
    assert "outcome:    REVERT" in done.stdout
    assert workspace.conf_bytes() == baseline_conf
    _, headers = get(workspace.lab.url + "/big/", {"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in headers
    with workspace.db() as conn:
        decision = conn.execute("select decision, acted from decisions").fetchone()
        assert tuple(decision) == ("REVERT", "reverted")


def test_failing_apply_reverts_and_exits_apply_failed(workspace: Workspace) -> None:
    conf = workspace.lab.nginx_conf
    add_experiment(
        workspace,
        "090_half_apply",
        apply=f"echo '# half done' >> {conf}; echo 'disk on fire' >&2; exit 3",
        revert="true",
    )
    baseline_conf = workspace.conf_bytes()

    done = workspace.smart("--run-once", "--experiment", "090_half_apply", *FAST)

    assert done.returncode == ExitCode.APPLY_FAILED
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("smart-tui: apply failed: 090_half_apply: applying")
    assert "exited 3: disk on fire" in lines[-1]
    assert "Traceback" not in done.stderr
    # revert was a no-op, so the snapshot put the bytes back.
    assert workspace.conf_bytes() == baseline_conf
    assert workspace.nginx_test().returncode == 0
    with workspace.db() as conn:
        run = conn.execute("select status, outcome, error from runs").fetchone()
        assert (run["status"], run["outcome"]) == ("failed", "APPLY_FAILED")
        assert "disk on fire" in run["error"]


def test_apply_that_changes_nothing_is_apply_failed(workspace: Workspace) -> None:
    add_experiment(workspace, "091_noop", apply="true", revert="true")

    done = workspace.smart("--run-once", "--experiment", "091_noop", *FAST)

    assert done.returncode == ExitCode.APPLY_FAILED
    assert "`true` exited 0 but changed no watched file" in done.stderr


def test_unreachable_target_is_one_line_and_exit_7(workspace: Workspace) -> None:
    done = workspace.smart(
        "--run-once",
        "--experiment",
        "001_nginx_workers",
        "--target-url",
        "http://127.0.0.1:9/",
        *FAST,
    )

    assert done.returncode == ExitCode.TARGET_UNREACHABLE
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("smart-tui: target unreachable:") and "127.0.0.1:9" in last


def test_sigterm_mid_measure_reverts(workspace: Workspace) -> None:
    baseline_conf = workspace.conf_bytes()
    process = subprocess.Popen(
        [
            *SMART,
            "--run-once",
            "--experiment",
            "003_gzip_max",
            "--baseline-seconds",
            "2",
            "--experiment-seconds",
            "30",
            "--settle-seconds",
            "0",
        ],
        cwd=workspace.base,
        env=workspace.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait until the variant is live, then stop the run.
    deadline = time.monotonic() + 30
    while workspace.conf_bytes() == baseline_conf:
        assert time.monotonic() < deadline, "the variant was never applied"
        time.sleep(0.1)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == ExitCode.INTERRUPTED
    assert "stopped by SIGTERM" in stderr
    assert "Traceback" not in stderr
    assert workspace.conf_bytes() == baseline_conf
    assert workspace.nginx_test().returncode == 0
    with workspace.db() as conn:
        run = conn.execute("select status, outcome from runs").fetchone()
        assert tuple(run) == ("failed", "ABORTED")


def test_second_run_is_refused_while_the_lock_is_held(workspace: Workspace) -> None:
    first = subprocess.Popen(
        [
            *SMART,
            "--run-once",
            "--experiment",
            "001_nginx_workers",
            *["--baseline-seconds", "5"],
        ],
        cwd=workspace.base,
        env=workspace.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        second = workspace.smart("--run-once", "--experiment", "002_proxy_cache")
        assert second.returncode == ExitCode.LOCKED
        assert "a run of 001_nginx_workers holds the lock since" in second.stderr
        assert f"(pid {first.pid})" in second.stderr
        # Resetting or stopping the lab under a run is refused the same way.
        for action in (["start", "--reset"], ["stop"]):
            lab = workspace.smart("lab", *action)
            assert lab.returncode == ExitCode.LOCKED, lab.stderr
        status = Lab(workspace.base / "var").status()
        assert status is not None and status.running
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=30)


def test_bad_config_and_bad_experiment_exit_codes(workspace: Workspace) -> None:
    (workspace.base / "smart.conf").write_text("IMPROVE_PC=5\n")
    bad_conf = workspace.smart("--run-once")
    assert bad_conf.returncode == ExitCode.BAD_CONFIG
    assert bad_conf.stderr.strip() == (
        f"smart-tui: bad config: {workspace.base / 'smart.conf'}:1: unknown key "
        "IMPROVE_PC; did you mean IMPROVE_PCT?"
    )

    (workspace.base / "smart.conf").write_text("")
    meta = workspace.base / "experiments" / "001_nginx_workers" / "meta.json"
    meta.write_text('{"id": "001_nginx_workers",')
    bad_meta = workspace.smart("--run-once", "--experiment", "001_nginx_workers")
    assert bad_meta.returncode == ExitCode.BAD_EXPERIMENT
    assert "meta.json:1:28: malformed JSON" in bad_meta.stderr
    assert "Traceback" not in bad_meta.stderr

    listing = workspace.smart("list")
    assert listing.returncode == ExitCode.BAD_EXPERIMENT
    assert "001_nginx_workers            BROKEN" in listing.stdout
    assert "002_proxy_cache              ok" in listing.stdout


def test_bad_flag_is_a_usage_error(workspace: Workspace) -> None:
    done = workspace.smart("--run-once", "--baseline-seconds")
    assert done.returncode == ExitCode.USAGE
    assert done.stderr == (
        "smart-tui: usage: argument --baseline-seconds: expected one argument; "
        "see `smart-tui --help`\n"
    )


def test_touches_relative_to_the_experiment_are_watched_and_restored(
    workspace: Workspace,
) -> None:
    """A file named in ``touches`` is what proves an apply and what a revert that
    forgets it is undone from; relative paths live in the experiment's folder."""
    add_experiment(
        workspace,
        "095_state_file",
        apply="echo on > state.txt",
        revert="true",  # forgets to remove it
    )
    folder = workspace.base / "experiments" / "095_state_file"
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "touches": ["state.txt"]}))
    conf_before = workspace.conf_bytes()

    # IMPROVE_PCT=99: a no-op variant must never be kept, so revert always runs.
    done = workspace.smart(
        "--run-once",
        "--experiment",
        "095_state_file",
        *FAST,
        "--set",
        "IMPROVE_PCT=99",
    )

    assert done.returncode == ExitCode.OK, done.stderr
    assert not (folder / "state.txt").exists()  # the snapshot had no such file
    assert workspace.conf_bytes() == conf_before
    with workspace.db() as conn:
        phases = conn.execute("select name, status, detail from phases").fetchall()
    applied = [p for p in phases if p["name"] == "apply"]
    reverted = [p for p in phases if p["name"] == "revert"]
    assert applied and applied[0]["status"] == "done"
    assert reverted and "state.txt" in reverted[-1]["detail"], [dict(p) for p in phases]
