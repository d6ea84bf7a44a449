"""Faults around a run against the real lab nginx: locks, failing scripts, reloads that
do not happen, a dying backend, an unwritable database, www/ or disk. Each test
records what it observed (tests/support/fault_table.py) before asserting, so
docs/faults.md shows failures too.

Read-only files are made with ``chattr +i`` (the suite runs as root, which ignores
file modes; the immutable flag also stops root, even through a descriptor already
open) and a full disk with a tiny tmpfs."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import fault_table
from support.cli import (
    add_faulty_experiment,
    short_windows,
    with_earlier_run,
    workspace,
)

from smart_tui.config import load_settings
from smart_tui.errors import ExitCode, Interrupted, LockHeld
from smart_tui.experiments import load
from smart_tui.lab import LabInfo
from smart_tui.tui.control import RunControl
from smart_tui.tui.runs import run_from_app

REPO = Path(__file__).resolve().parent.parent
FAST = short_windows(1, 1.5, 0.3, warmup_s=0.2)

READER = """
import json, sys, time
from pathlib import Path
from smart_tui.storage import Store
store = Store(Path(sys.argv[1]))
stop = Path(sys.argv[2])
deadline = time.monotonic() + 60
polls = errors = seconds = 0
last = ""
while time.monotonic() < deadline and not stop.exists():
    try:
        for run in store.runs(limit=5):
            for window in store.windows(run.id):
                seconds = max(seconds, len(store.seconds(window["id"])))
        polls += 1
    except Exception as exc:
        errors += 1
        last = repr(exc)
    time.sleep(0.02)
print(json.dumps({"polls": polls, "errors": errors, "seconds": seconds, "last": last}))
"""


class Workspace:
    """BASE_DIR with smart.conf, experiments, var/ (holding the lab) and one earlier
    run in the database, which no fault may lose."""

    def __init__(self, base: Path, lab: LabInfo) -> None:
        self.base = base
        self.lab = lab
        self.db_path = base / "var" / "smart.db"
        self.baseline = lab.nginx_conf.read_bytes()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMART_")}
        for key in ("COACH_TOKEN", "COACH_URL", "http_proxy", "HTTP_PROXY"):
            env.pop(key, None)
        env["SMART_CONFIG"] = str(self.base / "smart.conf")
        env["PYTHONPATH"] = str(REPO)
        return env

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "smart_tui", *args],
            cwd=self.base,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def smart(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
        process = self.popen(*args)
        stdout, stderr = process.communicate(timeout=timeout_s)
        return subprocess.CompletedProcess(
            process.args, process.returncode, stdout, stderr
        )

    def experiment(
        self, name: str, apply: str, revert: str, target_url: str = "/"
    ) -> None:
        add_faulty_experiment(self.base, name, apply, revert, target_url)

    def conf_changed(self) -> bool:
        return self.lab.nginx_conf.read_bytes() != self.baseline

    def wait_until_applied(self, process: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 30
        while not self.conf_changed():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the variant was never applied"
            time.sleep(0.05)

    def runs(self) -> dict[str, tuple[str, str, str]]:
        with sqlite3.connect(self.db_path) as conn:
            rows = conn.execute("select id, status, outcome, error from runs")
            return {row[0]: (row[1], row[2], row[3] or "") for row in rows}

    def server_state(self) -> tuple[str, bool]:
        """What the server is on now, in words, and whether that is all right."""
        same = not self.conf_changed()
        test = subprocess.run(
            [*self.lab.nginx_cmd, "-t"], capture_output=True, check=False
        )
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(self.lab.url + "/", timeout=5) as response:
                serving = response.status == 200
        except OSError:
            serving = False
        words = ", ".join(
            [
                "baseline bytes" if same else "config CHANGED",
                "nginx -t ok" if test.returncode == 0 else "nginx -t FAILS",
                "serving 200" if serving else "NOT serving",
            ]
        )
        return words, same and test.returncode == 0 and serving

    def record_state(self) -> tuple[str, bool]:
        """The new runs as stored, and whether the earlier run survived."""
        runs = self.runs()
        earlier = runs.pop("earlier-run", None) == ("done", "REVERT", "")
        shown = "; ".join(f"{status} {outcome}" for status, outcome, _ in runs.values())
        words = f"{shown or 'no run row'}" + ("" if earlier else "; EARLIER RUN LOST")
        return words, earlier and bool(runs)

    def note(self, test: str, fault: str, happened: str, *, expect_run: bool = True):
        server, server_ok = self.server_state()
        stored, stored_ok = self.record_state()
        if not expect_run:
            stored_ok = stored == "no run row"
            stored = "no run row (refused before any change); earlier run intact"
        fault_table.record(
            test, fault, happened, server, stored, server_ok and stored_ok
        )
        assert server_ok, server
        assert stored_ok, stored


@pytest.fixture
def ws(tmp_path: Path, lab: LabInfo) -> Workspace:
    return Workspace(with_earlier_run(workspace(tmp_path, "PROBE_RATE_RPS=100\n")), lab)


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """``chattr +i``: not even root may write, rename or add entries."""
    present = [path for path in paths if path.exists()]
    subprocess.run(["chattr", "+i", *map(str, present)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, present)], check=True)


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


# Two at once


def test_two_run_once_100_ms_apart_and_a_reader(ws: Workspace) -> None:
    """Two timers 100 ms apart, and the app's reads (another process) meanwhile."""
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(ws.db_path), str(ws.base / "stop")],
        env=ws.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    args = ["--run-once", "--experiment", "003_gzip_max", *FAST]
    first = ws.popen(*args)
    time.sleep(0.1)
    second = ws.popen(*args)
    outputs = [process.communicate(timeout=60) for process in (first, second)]
    (ws.base / "stop").touch()
    polls = json.loads(reader.communicate(timeout=30)[0])
    codes = sorted([first.returncode, second.returncode])
    refused, winner = (
        (second, first) if second.returncode == ExitCode.LOCKED else (first, second)
    )
    refusal = outputs[0 if refused is first else 1][1]
    ws.note(
        "test_two_run_once_100_ms_apart_and_a_reader",
        "two --run-once started 100 ms apart",
        f"exit codes {codes}; refused: {last_line(refusal)[:90]}...",
    )
    ws.note(
        "test_two_run_once_100_ms_apart_and_a_reader (reader)",
        "the app's reads while --run-once writes (two processes, WAL)",
        f"reader: {polls['polls']} polls of runs/windows/seconds, "
        f"{polls['errors']} errors, saw {polls['seconds']} live seconds",
    )

    assert codes == [ExitCode.OK, ExitCode.LOCKED]
    assert "holds the lock since" in refusal and f"(pid {winner.pid})" in refusal
    assert len(ws.runs()) == 2  # the earlier run and the one that ran
    assert polls["errors"] == 0, polls["last"]
    assert polls["polls"] > 100 and polls["seconds"] >= 2


def test_app_and_timer_at_once(ws: Workspace) -> None:
    settings = load_settings(
        config_path=ws.base / "smart.conf",
        overrides={"BASELINE_SECONDS": "20", "WARMUP_SECONDS": "0.3"},
        environ={},
    )
    experiment = load(ws.base / "experiments" / "003_gzip_max")
    control = RunControl(experiment.id)
    ended: list[BaseException] = []

    def app_worker() -> None:
        try:
            run_from_app(settings, experiment, control, lambda message: None)
        except Interrupted as exc:
            ended.append(exc)

    worker = threading.Thread(target=app_worker)
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while not (ws.base / "var" / "journal.json").exists():
            assert time.monotonic() < deadline, "the app's run never started"
            time.sleep(0.05)
        timer = ws.smart("--run-once", "--experiment", "003_gzip_max", *FAST)
    finally:
        control.stop.set()
        worker.join(timeout=30)

    # And the other way round: the timer runs, the app is refused.
    timer_run = ws.popen("--run-once", "--experiment", "003_gzip_max", *FAST)
    try:
        deadline = time.monotonic() + 15
        while not (ws.base / "var" / "journal.json").exists():
            assert time.monotonic() < deadline, "the timer's run never started"
            time.sleep(0.05)
        with pytest.raises(LockHeld) as refused:
            run_from_app(settings, experiment, RunControl(experiment.id), print)
    finally:
        timer_run.send_signal(signal.SIGINT)
        timer_run.communicate(timeout=30)
    ws.note(
        "test_app_and_timer_at_once",
        "the app and the timer at once (both orders)",
        f"timer exit {timer.returncode}: {last_line(timer.stderr)[:70]}...; "
        f"app refused: {refused.value.message[:60]}...",
    )

    assert timer.returncode == ExitCode.LOCKED
    assert "started in the smart-tui app holds the lock since" in timer.stderr
    assert f"(pid {os.getpid()})" in timer.stderr
    assert ended and not worker.is_alive()
    assert "a run of 003_gzip_max holds the lock since" in refused.value.message
    assert f"(pid {timer_run.pid})" in refused.value.message


# Scripts and reloads


def test_revert_script_that_fails_is_undone_by_the_snapshot(ws: Workspace) -> None:
    ws.experiment(
        "092_bad_revert",
        apply='printf "\\n# variant\\n" >> "$SMART_NGINX_CONF" && '
        'eval "$SMART_NGINX -s reload"',
        revert="echo 'revert broke' >&2; exit 4",
    )

    done = ws.smart("--run-once", "--experiment", "092_bad_revert", *FAST)

    with sqlite3.connect(ws.db_path) as conn:
        detail = conn.execute(
            "select detail from phases where name = 'revert'"
        ).fetchone()[0]
    ws.note(
        "test_revert_script_that_fails_is_undone_by_the_snapshot",
        "revert script fails (exit 4)",
        f"exit {done.returncode}; revert phase: {detail[:110]}",
    )
    assert done.returncode == ExitCode.OK, done.stderr
    assert "exited 4: revert broke" in detail and "from the snapshot" in detail
    # The operator is told, not only the log.
    assert "warning:    revert of 'bad' left files changed" in done.stdout


def test_nginx_t_failing_on_the_variant(ws: Workspace) -> None:
    ws.experiment(
        "093_bad_directive",
        apply='sed -i "s/gzip off;/gzip_bogus on;/" "$SMART_NGINX_CONF" && '
        'eval "$SMART_NGINX -t"',
        revert="true",
    )

    done = ws.smart("--run-once", "--experiment", "093_bad_directive", *FAST)

    ws.note(
        "test_nginx_t_failing_on_the_variant",
        "nginx -t fails on the variant",
        f"exit {done.returncode}: {last_line(done.stderr)[:120]}",
    )
    assert done.returncode == ExitCode.APPLY_FAILED
    assert 'unknown directive "gzip_bogus"' in done.stderr
    assert list(ws.runs().values())[-1][1] == "APPLY_FAILED"


def test_reload_that_does_not_take_effect(ws: Workspace) -> None:
    # A port someone else holds: nginx -t passes, the reload fails in the master,
    # which logs [emerg] and keeps serving the old config.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    ws.experiment(
        "094_taken_port",
        apply=f'sed -i "s/^\\( *listen 127.0.0.1:[0-9]*;\\)/\\1 listen '
        f'127.0.0.1:{port};/" "$SMART_NGINX_CONF" && eval "$SMART_NGINX -t" && '
        'eval "$SMART_NGINX -s reload"',
        revert="true",
    )
    try:
        done = ws.smart("--run-once", "--experiment", "094_taken_port", *FAST)
    finally:
        taken.close()

    ws.note(
        "test_reload_that_does_not_take_effect",
        "reload fails in nginx (listen on a taken port; nginx -t passes)",
        f"exit {done.returncode}: {last_line(done.stderr)[:140]}",
    )
    assert done.returncode == ExitCode.APPLY_FAILED
    assert "is not live: nginx logged after the reload" in done.stderr
    assert "Address already in use" in done.stderr


def test_backend_down_during_the_variant(ws: Workspace) -> None:
    ws.experiment(
        "095_backend_dies",
        apply='sed -i "s/gzip off;/gzip on;/" "$SMART_NGINX_CONF" && '
        'eval "$SMART_NGINX -s reload"',
        revert='sed -i "s/gzip on;/gzip off;/" "$SMART_NGINX_CONF" && '
        'eval "$SMART_NGINX -s reload"',
        target_url="/app/",
    )
    run = ws.popen(
        "--run-once",
        "--experiment",
        "095_backend_dies",
        *FAST[:2],
        "--experiment-seconds",
        "8",
        *FAST[4:],
    )
    ws.wait_until_applied(run)
    time.sleep(0.8)
    assert ws.lab.backend_pid is not None
    os.kill(ws.lab.backend_pid, signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=60)

    with sqlite3.connect(ws.db_path) as conn:
        reasons = conn.execute("select reasons from decisions").fetchone()[0]
    ws.note(
        "test_backend_down_during_the_variant",
        "backend killed during the variant window",
        f"exit {run.returncode}; {stdout.splitlines()[2].strip()}; "
        f"{json.loads(reasons)[-1][:80]}",
    )
    assert run.returncode == ExitCode.OK, stderr
    assert "outcome:    REVERT" in stdout
    assert "guardrail stop after" in reasons


# The database


def test_database_write_fails_mid_run(ws: Workspace) -> None:
    run = ws.popen(
        "--run-once",
        "--experiment",
        "003_gzip_max",
        *FAST[:2],
        "--experiment-seconds",
        "4",
        *FAST[4:],
    )
    ws.wait_until_applied(run)
    database = [ws.db_path, ws.db_path.with_name("smart.db-wal")]
    with immutable(*database):
        _, stderr = run.communicate(timeout=60)
        spooled = list((ws.base / "var" / "spool").glob("*.json"))
        server, _ = ws.server_state()
    following = ws.smart("list")

    with sqlite3.connect(ws.db_path) as conn:
        events = [row[0] for row in conn.execute("select kind from events")]
    ws.note(
        "test_database_write_fails_mid_run",
        "database becomes unwritable mid-run (chattr +i on smart.db and its WAL)",
        f"exit {run.returncode}, server while unwritable: {server}; "
        f"{len(spooled)} spool file(s), imported by the next command",
    )
    assert run.returncode == ExitCode.DATABASE_FAILED, stderr
    assert "the server was put back on its baseline" in last_line(stderr)
    assert server.startswith("baseline bytes, nginx -t ok")
    assert len(spooled) == 1
    assert "imported 3 spooled write(s) of run" in following.stderr
    assert not spooled[0].exists()
    status, outcome, error = ws.runs()[spooled[0].stem]
    assert (status, outcome) == ("failed", "ABORTED") and "OperationalError" in error
    assert "spool-imported" in events and "run-failed" in events


def test_database_read_only_at_start(ws: Workspace) -> None:
    database = [ws.db_path, ws.db_path.with_name("smart.db-wal")]
    with immutable(*database):
        done = ws.smart("--run-once", "--experiment", "003_gzip_max", *FAST)
    ws.note(
        "test_database_read_only_at_start",
        "database read-only when the run starts",
        f"exit {done.returncode}: {last_line(done.stderr)[:110]}...",
        expect_run=False,
    )
    assert done.returncode == ExitCode.DATABASE_FAILED
    assert done.stderr.strip().splitlines() == [last_line(done.stderr)]
    assert last_line(done.stderr).startswith("smart-tui: database: cannot write")
    assert not (ws.base / "var" / "journal.json").exists()
    assert not (ws.base / "var" / "runs").exists()


# The dashboard


@contextmanager
def full_tmpfs(folder: Path) -> Iterator[None]:
    folder.mkdir(exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)], check=True
    )
    try:
        filled = subprocess.run(
            ["dd", "if=/dev/zero", f"of={folder / 'filler'}", "bs=4096"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert "No space left on device" in filled.stderr
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_www_unwritable_run_completes(ws: Workspace, fault: str) -> None:
    www = ws.base / "www"
    www.mkdir()
    with immutable(www) if fault == "read-only" else full_tmpfs(www):
        done = ws.smart("--run-once", "--experiment", "003_gzip_max", *FAST)
    logged = [line for line in done.stderr.splitlines() if "dashboard not" in line]
    ws.note(
        f"test_www_unwritable_run_completes[{fault}]",
        f"www/ {fault} ({'chattr +i' if fault == 'read-only' else 'tmpfs of 16k'})",
        f"exit {done.returncode}; logged: {(logged or ['nothing'])[0][:90]}",
    )
    assert done.returncode == ExitCode.OK, done.stderr
    assert logged and "outcome:" in done.stdout
