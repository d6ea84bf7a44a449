"""Running the real ``smart-tui`` command against a test workspace: a folder with a
copy of the shipped experiments, its own smart.conf, and var/ holding the lab."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
SMART = [sys.executable, "-m", "smart_tui"]


def short_windows(
    baseline_s: float, variant_s: float, settle_s: float, warmup_s: float | None = None
) -> list[str]:
    """Command-line flags for a quick run: these window lengths, no cooldown."""
    flags = [
        "--baseline-seconds",
        f"{baseline_s:g}",
        "--experiment-seconds",
        f"{variant_s:g}",
        "--settle-seconds",
        f"{settle_s:g}",
        "--cooldown-seconds",
        "0",
    ]
    if warmup_s is not None:
        flags += ["--set", f"WARMUP_SECONDS={warmup_s:g}"]
    return flags


def workspace(base: Path, conf: str) -> Path:
    """Copy the shipped experiments into ``base`` and write its smart.conf."""
    shutil.copytree(REPO / "experiments", base / "experiments")
    (base / "smart.conf").write_text(conf)
    return base


def smart_env(base: Path) -> dict[str, str]:
    """The caller's environment without SMART_* settings, pointed at ``base``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMART_")}
    env.pop("COACH_TOKEN", None)
    env.pop("COACH_URL", None)
    env["SMART_CONFIG"] = str(base / "smart.conf")
    return env


def smart(
    base: Path, *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``smart-tui ARGS`` in ``base`` and wait for it."""
    return subprocess.run(
        [*SMART, *args],
        cwd=base,
        env=smart_env(base),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def smart_background(base: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``smart-tui ARGS`` in ``base`` without waiting."""
    return subprocess.Popen(
        [*SMART, *args],
        cwd=base,
        env=smart_env(base),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def with_earlier_run(base: Path) -> Path:
    """Record a finished run before the test's own, to show no run is lost."""
    from smart_tui.storage import Store

    store = Store(base / "var" / "smart.db")
    store.start_run(
        "earlier-run", "001_nginx_workers", trigger="t", pid=1, host="h", settings={}
    )
    store.finish_run("earlier-run", status="done", outcome="REVERT")
    store.close()
    return base


def add_faulty_experiment(
    base: Path, name: str, apply: str, revert: str, target_url: str = "/"
) -> None:
    """An experiment named ``name`` whose one variant runs ``apply``/``revert``."""
    folder = base / "experiments" / name
    folder.mkdir()
    meta = {
        "id": name,
        "description": "a deliberately faulty experiment",
        "variants": [
            {"name": "baseline", "apply": "true"},
            {"name": "bad", "apply": apply},
        ],
        "revert": revert,
        "target_url": target_url,
        "measure_interval_sec": 1,
    }
    (folder / "meta.json").write_text(json.dumps(meta))
