"""TUI benchmarks for issue 5, run by hand (not timed tests):

1. start: ``smart-tui`` process start to the first screen drawn, with 50 experiments
   and 10,000 past runs in the database; median of 5 (target < 1.0 s).
2. keys: with a probe sending 5,000 req/s to the lab nginx, the time from a key press
   to the new screen being current; median of 40 presses (target < 100 ms).

    .venv/bin/python bench/tui_bench.py [start|keys|all]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from smart_tui.config import load_settings
from smart_tui.lab import Lab
from smart_tui.probe import ProbeConfig, run_probe
from smart_tui.storage import Store

EXPERIMENTS = 50
RUNS = 10_000
STARTS = 5
PRESSES = 40

FIRST_SCREEN = """
import sys, time
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


def bench_start(base: Path) -> float:
    conf = make_workspace(base)
    times = []
    for _ in range(STARTS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", FIRST_SCREEN, str(conf)], check=True)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"start to first screen: median {median:.3f} s of {STARTS}: "
          + ", ".join(f"{t:.3f}" for t in times))  # fmt: skip
    return median


async def _press_times(settings_conf: Path) -> list[float]:
    from smart_tui.tui import build_app

    app = build_app(load_settings(config_path=settings_conf, environ={}))
    times = []
    async with app.run_test(size=(80, 24)) as pilot:
        for index in range(PRESSES):
            key, mode = ("3", "decisions") if index % 2 == 0 else ("1", "experiments")
            started = time.perf_counter()
            await pilot.press(key)
            while app.current_mode != mode:
                await asyncio.sleep(0.001)
            await pilot.pause()
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)
    return times


def bench_keys(base: Path) -> float:
    conf = make_workspace(base)
    lab = Lab(base / "var")
    info = lab.start()
    try:
        config = ProbeConfig(
            url=info.url + "/", rate_rps=5000, duration_s=15, connections=64
        )
        result: list[object] = []
        probe = threading.Thread(target=lambda: result.append(run_probe(config)))
        probe.start()
        time.sleep(2)  # let the probe reach its rate
        times = asyncio.run(_press_times(conf))
        probe.join(timeout=60)
    finally:
        lab.stop()
    median_ms = statistics.median(times) * 1000
    achieved = getattr(result[0], "summary", lambda: {})() if result else {}
    print(f"key press to new screen under load: median {median_ms:.1f} ms of "
          f"{len(times)}, max {max(times) * 1000:.1f} ms; probe achieved "
          f"{achieved.get('achieved_rps', '?')} req/s")  # fmt: skip
    return median_ms


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which in ("start", "all"):
        with tempfile.TemporaryDirectory() as folder:
            bench_start(Path(folder))
    if which in ("keys", "all"):
        with tempfile.TemporaryDirectory() as folder:
            bench_keys(Path(folder))


if __name__ == "__main__":
    main()
