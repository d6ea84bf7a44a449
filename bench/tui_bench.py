"""TUI benchmarks for issue 5, run by hand (not timed tests). Both drive the real
``smart-tui`` command in a pseudo-terminal of 80x24, as an operator's SSH session
does, and time what the terminal receives:

1. start: process start to the first screen drawn (a row of the experiments table
   written to the terminal), with 50 experiments and 10,000 past runs in the
   database; median of 5 (target < 1.0 s). Also timed in-process (``build_app``
   run headless), which leaves out the command line's own imports.
2. keys: with a probe sending 5,000 req/s to the lab nginx from this process, the
   time from writing a key to the pty to the new screen's status line arriving;
   median of 40 presses (target < 100 ms). The harness's own cost is reading the
   pty: under 1 ms.
3. run: the same presses while the app itself runs 002_proxy_cache at 5,000 req/s
   against the lab (its runner thread, its probe process, the Live screen redrawn
   4 times a second), as an operator watching a run would press them.

    .venv/bin/python bench/tui_bench.py [start|keys|run|all]
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

from smart_tui.lab import Lab
from smart_tui.probe import ProbeConfig, run_probe
from smart_tui.storage import Store

EXPERIMENTS = 50
RUNS = 10_000
STARTS = 5
PRESSES = 40
COLUMNS, LINES = 80, 24
SMART_TUI = Path(sys.executable).with_name("smart-tui")
# A row of the experiments table: the first screen is drawn with its data.
FIRST_ROW = b"000_bench"
# Each screen's status line starts with its title.
TITLES = {
    "1": b"Experiments \xe2\x94\x82",
    "2": b"Live \xe2\x94\x82",
    "3": b"Decisions \xe2\x94\x82",
}
REPO = Path(__file__).resolve().parent.parent
RUN_CONF = """\
PROBE_RATE_RPS=5000
BASELINE_SECONDS=20
EXPERIMENT_SECONDS=20
SETTLE_SECONDS=1
COOLDOWN_SECONDS=0
WARMUP_SECONDS=0.5
"""

IN_PROCESS = """
import sys
from pathlib import Path
from smart_tui.config import load_settings
from smart_tui.tui import build_app

app = build_app(load_settings(config_path=Path(sys.argv[1]), environ={}))

async def drawn(pilot):
    await pilot.pause()
    app.exit()

app.run(headless=True, auto_pilot=drawn, size=(80, 24))
"""


def make_workspace(base: Path) -> Path:
    for index in range(EXPERIMENTS):
        name = f"{index:03d}_bench"
        folder = base / "experiments" / name
        folder.mkdir(parents=True)
        meta = {
            "id": name,
            "description": f"benchmark experiment {index}",
            "variants": [
                {"name": "baseline", "apply": "true"},
                {"name": "on", "apply": "true"},
            ],
        }
        (folder / "meta.json").write_text(json.dumps(meta))
    conf = base / "smart.conf"
    conf.write_text("APPROVAL=manual\n")
    conf.chmod(0o600)
    store = Store(base / "var" / "smart.db")
    with store.db.conn:
        store.db["runs"].insert_all(
            {
                "id": f"run-{number:05d}",
                "experiment_id": f"{number % EXPERIMENTS:03d}_bench",
                "started_at": f"2026-{1 + number % 12:02d}-01T00:00:{number % 60:02d}Z",
                "finished_at": "2026-12-01T00:00:00+00:00",
                "status": "done",
                "outcome": ("KEEP", "REVERT", "INCONCLUSIVE")[number % 3],
                "trigger": "timer",
            }
            for number in range(RUNS)
        )
        store.db["decisions"].insert_all(
            {
                "run_id": f"run-{number:05d}",
                "variant": "on",
                "decision": ("KEEP", "REVERT", "INCONCLUSIVE")[number % 3],
                "policy": "stats",
                "decided_at": "2026-12-01T00:00:00+00:00",
                "reasons": "[]",
                "details": "{}",
                "acted": "reverted",
            }
            for number in range(RUNS)
        )
    store.close()
    return conf


class Terminal:
    """``smart-tui`` on a pseudo-terminal of COLUMNS x LINES; ``wait_for`` reads
    what it draws until a marker arrives."""

    def __init__(self, conf: Path) -> None:
        self.master, slave = os.openpty()
        size = struct.pack("HHHH", LINES, COLUMNS, 0, 0)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [str(SMART_TUI), "--config", str(conf)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=conf.parent,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = b""

    def wait_for(self, marker: bytes, timeout_s: float = 30.0) -> float:
        """Seconds until ``marker`` arrives in output read after this call."""
        self.seen = b""
        deadline = time.perf_counter() + timeout_s
        while marker not in self.seen:
            left = deadline - time.perf_counter()
            if left <= 0 or self.process.poll() is not None:
                tail = self.seen[-400:].decode(errors="replace")
                raise RuntimeError(f"no {marker!r} on the terminal; last: {tail}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                self.seen += os.read(self.master, 1 << 16)
        return time.perf_counter()

    def drain(self, quiet_s: float = 0.05) -> None:
        """Read until the app has been quiet for ``quiet_s``."""
        while select.select([self.master], [], [], quiet_s)[0]:
            os.read(self.master, 1 << 16)

    def press(self, key: str, marker: bytes) -> float:
        """Seconds from writing ``key`` to ``marker`` arriving."""
        self.drain()
        sent = time.perf_counter()
        os.write(self.master, key.encode())
        return self.wait_for(marker) - sent

    def close(self) -> None:
        """Quit as an operator does (Ctrl+Q, then "y" if a run asks), reading the
        pty meanwhile: an unread pty fills and blocks the app's next write."""
        for key, wait_s in ((b"\x11", 0.5), (b"y", 30.0)):
            if self.process.poll() is None:
                os.write(self.master, key)
                self.drain_until_exit(wait_s)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.drain_until_exit(30.0)
        os.close(self.master)

    def drain_until_exit(self, timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        while self.process.poll() is None and time.perf_counter() < deadline:
            try:
                self.drain(0.1)
            except OSError:  # the app closed its side
                time.sleep(0.1)


def bench_start(base: Path) -> float:
    conf = make_workspace(base)
    times = []
    for _ in range(STARTS):
        terminal = Terminal(conf)
        try:
            times.append(terminal.wait_for(FIRST_ROW) - terminal.started)
        finally:
            terminal.close()
    in_process = []
    for _ in range(STARTS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", IN_PROCESS, str(conf)], check=True)
        in_process.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"smart-tui start to first screen on a pty: median {median:.3f} s of "
          f"{STARTS}: " + ", ".join(f"{t:.3f}" for t in times))  # fmt: skip
    print(f"build_app headless, no command line: median "
          f"{statistics.median(in_process):.3f} s: "
          + ", ".join(f"{t:.3f}" for t in in_process))  # fmt: skip
    return median


def _press_times(conf: Path) -> list[float]:
    terminal = Terminal(conf)
    try:
        terminal.wait_for(FIRST_ROW)
        return _presses(terminal, ("3", "1"))
    finally:
        terminal.close()


def _presses(terminal: Terminal, keys: tuple[str, str]) -> list[float]:
    times = []
    for index in range(PRESSES):
        key = keys[index % 2]
        times.append(terminal.press(key, TITLES[key]))
        time.sleep(0.1)
    return times


def _report_keys(label: str, times: list[float]) -> float:
    median_ms = statistics.median(times) * 1000
    print(f"key press to new screen {label}: median {median_ms:.1f} ms of "
          f"{len(times)}, max {max(times) * 1000:.1f} ms")  # fmt: skip
    return median_ms


def bench_keys(base: Path) -> float:
    conf = make_workspace(base)
    _report_keys("without load", _press_times(conf))
    lab = Lab(base / "var")
    info = lab.start()
    try:
        config = ProbeConfig(
            url=info.url + "/", rate_rps=5000, duration_s=20, connections=64
        )
        result: list[object] = []
        # The probe in a thread of this process, the app in its own: the two
        # compete for the CPUs as a run and the app do.
        probe = threading.Thread(target=lambda: result.append(run_probe(config)))
        probe.start()
        time.sleep(2)  # let the probe reach its rate
        median_ms = _report_keys("with the probe", _press_times(conf))
        probe.join(timeout=60)
    finally:
        lab.stop()
    achieved = getattr(result[0], "summary", lambda: {})() if result else {}
    print(f"probe achieved {achieved.get('achieved_rps', '?')} req/s")
    return median_ms


def bench_run(base: Path) -> float:
    shutil.copytree(REPO / "experiments", base / "experiments")
    conf = base / "smart.conf"
    conf.write_text(RUN_CONF)
    conf.chmod(0o600)
    lab = Lab(base / "var")
    lab.start()
    try:
        terminal = Terminal(conf)
        try:
            terminal.wait_for(b"001_nginx_workers")
            os.write(terminal.master, b"\x1b[B")  # down: 002_proxy_cache
            time.sleep(0.3)
            os.write(terminal.master, b"r")
            terminal.wait_for(b"/5000 req/s")  # seconds are flowing
            times = _presses(terminal, ("3", "2"))
        finally:
            terminal.close()
    finally:
        lab.stop()
    return _report_keys("during the app's own run at 5,000 req/s", times)


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which in ("start", "all"):
        with tempfile.TemporaryDirectory() as folder:
            bench_start(Path(folder))
    if which in ("keys", "all"):
        with tempfile.TemporaryDirectory() as folder:
            bench_keys(Path(folder))
    if which in ("run", "all"):
        with tempfile.TemporaryDirectory() as folder:
            bench_run(Path(folder))


if __name__ == "__main__":
    main()
