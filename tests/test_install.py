"""deploy/install.sh for real into a temporary prefix: the layout, a queued
`--run-once` from the installed virtualenv against the lab nginx, a second run that
changes nothing, and `--uninstall` leaving the prefix empty. Also the cloud-init file.

The installed virtualenv gets smart-tui from the checkout with pip, offline: its
dependencies come from this test's virtualenv through PYTHONPATH (a folder of links
that leaves out the editable smart_tui), so the test needs no network."""

from __future__ import annotations

import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from support.cli import short_windows

from smart_tui.errors import ExitCode
from smart_tui.lab import LabInfo

REPO = Path(__file__).resolve().parent.parent
# What install.sh reads from a checkout.
CHECKOUT_PARTS = ["deploy", "experiments", "smart_tui", "pyproject.toml", "README.md"]
FAST = short_windows(2, 2, 0, warmup_s=0.5)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen copy of the checkout, so edits made while the test runs cannot
    make the second install see new sources."""
    folder = tmp_path_factory.mktemp("checkout")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.smart-*")
    for part in [*CHECKOUT_PARTS, "smart.conf"]:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, folder / part, ignore=ignore)
        else:
            shutil.copy2(source, folder / part)
    return folder


@pytest.fixture(scope="module")
def deps_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This venv's site-packages minus smart_tui itself, as links."""
    folder = tmp_path_factory.mktemp("deps")
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if "smart_tui" in entry.name or entry.suffix == ".pth":
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(autouse=True)
def _frozen_checkout(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMART_TEST_CHECKOUT", str(checkout))


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def offline_env(deps: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMART_", "PIP_"))}
    env.update(
        PYTHONPATH=str(deps),
        # pip builds from the checkout copy with the setuptools in deps.
        PIP_NO_BUILD_ISOLATION="0",
        PIP_NO_INDEX="1",
        SMART_PIP_OPTS="--no-deps",
        SMART_PYTHON=sys.executable,
    )
    return env


def install(
    prefix: Path, deps: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    script = Path(os.environ["SMART_TEST_CHECKOUT"]) / "deploy" / "install.sh"
    result = subprocess.run(
        ["bash", str(script), "--prefix", str(prefix), *args],
        env=offline_env(deps),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_install_run_reinstall_uninstall(
    tmp_path: Path, lab: LabInfo, deps_dir: Path
) -> None:
    assert lab.running and Path(tmp_path / "var" / "lab").is_dir()
    prefix = tmp_path / "root"
    prefix.mkdir()
    base = prefix / "opt" / "smart"

    first = install(prefix, deps_dir, "--no-systemd", "--listen", "127.0.0.1:8088")

    assert "no user created, no systemctl, no nginx reload" in first.stdout
    # Root with an existing SMART_USER (default smart) gets a server's owners.
    owned = os.geteuid() == 0 and user_exists("smart")
    assert ("owners as on a server" if owned else "no chown") in first.stdout
    assert first.stdout.rstrip().splitlines()[-1].startswith("install.sh: done: ")
    for path in ["smart.conf", "experiments/002_proxy_cache/meta.json", "var/runs"]:
        assert (base / path).exists(), path
    assert (base / "www").is_dir()
    assert (base / "smart.conf").stat().st_mode & 0o777 == (0o640 if owned else 0o600)
    assert (base / "root-state").stat().st_mode & 0o777 == 0o700
    assert os.access(base / "experiments/002_proxy_cache/apply.sh", os.X_OK)
    sudoers = prefix / "etc/sudoers.d/smart"
    assert sudoers.stat().st_mode & 0o777 == 0o440
    assert (
        f"NOPASSWD: {base}/venv/bin/smart-tui-root {base}/smart.conf *"
        in sudoers.read_text()
    )
    site = (prefix / "etc/nginx/sites-available/smart-dashboard").read_text()
    assert "listen 127.0.0.1:8088;" in site and f"root {base}/www;" in site
    assert (prefix / "etc/nginx/sites-enabled/smart-dashboard").is_symlink()
    assert (
        f"{base}/var/experiment.log {{"
        in (prefix / "etc/logrotate.d/smart").read_text()
    )
    assert not (prefix / "etc/systemd").exists()  # --no-systemd

    # The installed command, against the lab: empty queue first, then a queued run.
    smart = [str(base / "venv/bin/smart-tui"), "--set", f"VAR_DIR={tmp_path / 'var'}"]
    env = offline_env(deps_dir)
    env["SMART_CONFIG"] = str(base / "smart.conf")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*smart, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
        )

    empty = run("--run-once", *FAST)
    queued = run("queue", "add", "002_proxy_cache")
    ran = run("--run-once", *FAST)

    assert empty.returncode == ExitCode.NOTHING_TO_DO, empty.stderr
    assert "the queue is empty" in empty.stderr
    assert queued.returncode == 0, queued.stderr
    assert ran.returncode == 0, ran.stderr
    assert "experiment: 002_proxy_cache" in ran.stdout
    with sqlite3.connect(base / "var/smart.db") as db:
        rows = db.execute("select experiment_id, trigger, status from runs").fetchall()
        waiting = db.execute("select count(*) from queue").fetchone()[0]
    assert rows == [("002_proxy_cache", "run-once:queue", "done")]
    assert waiting == 0
    page = (base / "www/index.html").read_text()
    assert "002_proxy_cache" in page

    second = install(prefix, deps_dir, "--no-systemd", "--listen", "127.0.0.1:8088")

    assert second.stdout.rstrip().splitlines()[-1] == (
        f"install.sh: nothing changed: {base} is up to date"
    ), second.stdout

    removed = install(prefix, deps_dir, "--uninstall")

    assert removed.stdout.strip().endswith(f"removed smart-tui from {prefix}")
    assert list(prefix.iterdir()) == []
    again = install(prefix, deps_dir, "--uninstall")
    assert "nothing to uninstall" in again.stdout


def test_uninstall_leaves_what_it_did_not_add(tmp_path: Path, deps_dir: Path) -> None:
    prefix = tmp_path / "root"
    (prefix / "etc/nginx/sites-enabled").mkdir(parents=True)
    theirs = prefix / "etc/nginx/sites-enabled/their-site"
    theirs.write_text("server {}\n")
    default = prefix / "etc/nginx/sites-enabled/default"
    default.symlink_to("../sites-available/default")

    install(prefix, deps_dir, "--no-systemd")
    assert not default.is_symlink()  # port 80: Debian's welcome site steps aside
    install(prefix, deps_dir, "--uninstall")

    assert sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*")) == [
        "etc",
        "etc/nginx",
        "etc/nginx/sites-enabled",
        "etc/nginx/sites-enabled/default",
        "etc/nginx/sites-enabled/their-site",
    ]
    assert os.readlink(default) == "../sites-available/default"
    assert theirs.read_text() == "server {}\n"


def test_bad_options_are_refused_before_anything_is_written(
    tmp_path: Path, deps_dir: Path
) -> None:
    weird = tmp_path / "has space"
    result = install(weird, deps_dir, "--no-systemd", check=False)
    unknown = install(tmp_path / "p", deps_dir, "--frobnicate", check=False)

    assert result.returncode == 1
    assert "characters sudoers/systemd/nginx would misread" in result.stderr
    assert list(weird.iterdir()) == []
    assert unknown.returncode == 1
    assert "unknown option '--frobnicate'" in unknown.stderr


def test_cloud_init_is_valid_cloud_config() -> None:
    import yaml  # PyYAML: a test dependency (pyproject's test extra)

    path = REPO / "deploy" / "hetzner-cloud-init.yaml"
    text = path.read_text()

    config = yaml.safe_load(text)

    assert text.splitlines()[0] == "#cloud-config"
    assert isinstance(config, dict)
    assert {"package_update", "packages", "runcmd"} <= set(config)
    assert {"nginx", "git", "python3-venv", "sudo"} <= set(config["packages"])
    commands = [
        " ".join(cmd) if isinstance(cmd, list) else cmd for cmd in config["runcmd"]
    ]
    assert any("git clone" in cmd and "YOUR_USERNAME" in cmd for cmd in commands)
    assert any("deploy/install.sh" in cmd for cmd in commands)
    known = {
        "package_update",
        "package_upgrade",
        "packages",
        "runcmd",
        "write_files",
        "final_message",
    }
    assert set(config) <= known
