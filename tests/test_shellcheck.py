"""Static checks with the real tools: shellcheck on every shell script of the repo,
`systemd-analyze verify` on the rendered units and `visudo -cf` on the rendered
sudoers file. A missing tool fails the test: `.ci/run` installs them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".venv", ".git", "var", "www", "build", ".mypy_cache", ".ruff_cache"}
UNITS = ["smart-experiment.service", "smart-experiment.timer"]
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def tool(name: str) -> str:
    found = shutil.which(name, path=SBIN)
    if found is None:
        pytest.fail(f"{name} is not installed; run .ci/run (it installs it)")
    return found


def shell_scripts() -> list[Path]:
    scripts = [REPO / ".ci" / "run"]
    for path in sorted(REPO.rglob("*.sh")):
        if not SKIP_DIRS & set(path.relative_to(REPO).parts):
            scripts.append(path)
    return scripts


def test_every_shell_script_passes_shellcheck() -> None:
    scripts = shell_scripts()
    assert REPO / "deploy" / "install.sh" in scripts
    assert REPO / "tests" / "run.sh" in scripts

    result = subprocess.run(
        [tool("shellcheck"), "--external-sources", *map(str, scripts)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    """install.sh --render for a temporary prefix, with a stand-in smart-tui where
    the unit's ExecStart expects it (verify checks that it is executable)."""
    prefix = tmp_path / "root"
    stub = prefix / "opt/smart/venv/bin/smart-tui"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    out = tmp_path / "rendered"
    script = str(REPO / "deploy/install.sh")
    result = subprocess.run(
        ["bash", script, "--prefix", str(prefix), "--render", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == [
        "logrotate.smart",
        "nginx-site.conf",
        "smart-experiment.service",
        "smart-experiment.timer",
        "sudoers.smart",
    ]
    for path in out.iterdir():
        assert "@" not in path.read_text().replace("@localhost", ""), path
    return out


def test_units_pass_systemd_analyze_verify(rendered: Path) -> None:
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", *UNITS],
        cwd=rendered,
        capture_output=True,
        text=True,
        timeout=60,
    )

    ours = [line for line in result.stderr.splitlines() if "smart-experiment" in line]
    assert result.returncode == 0 and ours == [], result.stderr
    service = (rendered / "smart-experiment.service").read_text()
    timer = (rendered / "smart-experiment.timer").read_text()
    assert "\nType=oneshot\n" in service
    assert "\nSuccessExitStatus=10\n" in service
    assert "\nNoNewPrivileges=no\n" in service
    assert "/opt/smart/venv/bin/smart-tui --run-once\n" in service
    assert "\nOnCalendar=*-*-* 03:00:00\n" in timer
    assert "\nRandomizedDelaySec=30min\n" in timer
    assert "\nPersistent=true\n" in timer


def test_sudoers_passes_visudo(rendered: Path) -> None:
    path = rendered / "sudoers.smart"
    path.chmod(0o440)

    result = subprocess.run(
        [tool("visudo"), "-cf", str(path)], capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 0, result.stdout + result.stderr
    rules = [
        line
        for line in path.read_text().splitlines()
        if line and not line.startswith("#")
    ]
    # One command, pinned to the install's own smart.conf: nothing else as root.
    base = rendered.parent / "root" / "opt" / "smart"
    helper = f"{base}/venv/bin/smart-tui-root {base}/smart.conf *"
    assert rules[-1] == f"smart ALL = (root) NOPASSWD: {helper}"
