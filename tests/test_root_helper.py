"""The real-server privilege path, whole: deploy/install.sh lays out a prefix for an
unprivileged service user (``nobody`` here), its sudoers rule is put in
/etc/sudoers.d for the module's duration, and runs started as that user edit a
root-owned nginx config only through ``sudo -n smart-tui-root``.

The installed virtualenv is built from the system python (an unprivileged user
cannot exec the pyenv interpreter under /root) and gets its libraries as hard links
from this test's virtualenv, so the helper finds them after sudo has reset the
environment, and nothing is downloaded."""

from __future__ import annotations

import json
import os
import pwd
import resource
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.cli import smart, workspace

from smart_tui.config import update_config_file
from smart_tui.errors import ConfigError, ExitCode
from smart_tui.lab import Lab, LabInfo
from smart_tui.root_helper import Helper, require_trusted, require_trusted_tree
from smart_tui.root_state import KEEP_RUNS

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
USER = "nobody"
FAST = {
    "BASELINE_SECONDS": "2",
    "EXPERIMENT_SECONDS": "2",
    "SETTLE_SECONDS": "0",
    "COOLDOWN_SECONDS": "0",
    "WARMUP_SECONDS": "0.5",
}


@dataclass(frozen=True)
class Server:
    """A prefix install acting on a root-owned lab nginx."""

    folder: Path
    base: Path
    lab: LabInfo
    original: bytes  # the lab's nginx.conf before any test

    @property
    def helper(self) -> list[str]:
        return [
            str(self.base / "venv/bin/smart-tui-root"),
            str(self.base / "smart.conf"),
        ]

    def conf(self) -> bytes:
        return self.lab.nginx_conf.read_bytes()

    def as_user(
        self, *args: str, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._argv(args),
            **self._as_service_user(),
            capture_output=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )

    def background(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self._argv(args),
            **self._as_service_user(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def _as_service_user(self) -> dict[str, Any]:
        """Popen arguments: in the install's folder, as the service user alone."""
        return {
            "cwd": self.base,
            "env": self._env(),
            "user": USER,
            "group": _group(),
            "extra_groups": [],
            "text": True,
        }

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        first, *rest = args
        if first == "sudo":
            return list(args)
        if first in ("smart-tui-root", "python"):
            return [str(self.base / "venv/bin" / first), *rest]
        return [str(self.base / "venv/bin/smart-tui"), *args]

    def _env(self) -> dict[str, str]:
        return server_env(self)

    def runs(self) -> list[tuple[str, str, str | None]]:
        with sqlite3.connect(self.base / "var/smart.db") as db:
            return db.execute(
                "select id, status, outcome from runs order by started_at"
            ).fetchall()


def sudo_helper(server: Server) -> list[str]:
    return ["sudo", "-n", *server.helper]


def server_env(server: Server) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "SMART_CONFIG": str(server.base / "smart.conf"),
        "LANG": "C.UTF-8",
    }


def _group() -> int:
    return pwd.getpwnam(USER).pw_gid


def _link_tree(source: Path, target: Path) -> None:
    """Hard links where the file system allows them, copies elsewhere."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, symlinks=True, copy_function=link)


def _install(checkout: Path, prefix: Path, site: Path) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMART_", "PIP_"))}
    env.update(
        PYTHONPATH=str(site),
        PIP_NO_BUILD_ISOLATION="0",
        PIP_NO_INDEX="1",
        SMART_PIP_OPTS="--no-deps",
        SMART_PYTHON=SYSTEM_PYTHON,
        SMART_USER=USER,
    )
    result = subprocess.run(
        [
            "bash",
            str(checkout / "deploy/install.sh"),
            "--prefix",
            str(prefix),
            "--no-systemd",
            "--no-nginx",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return prefix / "opt/smart"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Outside pytest's folders (root's alone): the service user must get through.
    folder = Path(tempfile.mkdtemp(prefix="smart-root-"))
    folder.chmod(0o755)
    checkout = tmp_path_factory.mktemp("checkout")
    for part in [
        "deploy",
        "experiments",
        "smart_tui",
        "pyproject.toml",
        "README.md",
        "smart.conf",
    ]:
        source = REPO / part
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.smart-*")
        if source.is_dir():
            shutil.copytree(source, checkout / part, ignore=ignore)
        else:
            shutil.copy2(source, checkout / part)
    site = Path(sysconfig.get_paths()["purelib"])
    deps = tmp_path_factory.mktemp("deps")
    for entry in site.iterdir():
        if "smart_tui" not in entry.name and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)

    lab = Lab(folder / "labvar")
    info = lab.start()
    sudoers = Path(f"/etc/sudoers.d/smart-tui-test-{os.getpid()}")
    try:
        base = _install(checkout, folder / "root", deps)
        installed_site = next((base / "venv/lib").glob("python3*/site-packages"))
        for entry in site.iterdir():
            if "smart_tui" in entry.name or entry.suffix == ".pth":
                continue
            if entry.name in ("pip", "setuptools") or entry.name.startswith(
                ("pip-", "setuptools-", "_distutils")
            ):
                continue
            if not (installed_site / entry.name).exists():
                if entry.is_dir():
                    _link_tree(entry, installed_site / entry.name)
                else:
                    shutil.copy2(entry, installed_site / entry.name)
        update_config_file(
            base / "smart.conf",
            {
                "TARGET_URL": info.url,
                "NGINX_CONF": str(info.nginx_conf),
                "NGINX_CMD": shlex.join(info.nginx_cmd),
                "NGINX_PID_FILE": str(info.prefix / "logs/nginx.pid"),
                "NGINX_ERROR_LOG": str(info.error_log),
                "ROOT_HELPER_CMD": shlex.join(
                    [
                        "sudo",
                        "-n",
                        str(base / "venv/bin/smart-tui-root"),
                        str(base / "smart.conf"),
                    ]
                ),
                **FAST,
            },
        )
        rule = folder / "root/etc/sudoers.d/smart"
        check = subprocess.run(["visudo", "-cf", str(rule)], capture_output=True)
        assert check.returncode == 0, check
        shutil.copy2(rule, sudoers)
        sudoers.chmod(0o440)
        yield Server(folder, base, info, info.nginx_conf.read_bytes())
    finally:
        sudoers.unlink(missing_ok=True)
        lab.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_install_leaves_the_service_user_nothing_root_trusts(
    server: Server,
) -> None:
    conf = server.base / "smart.conf"
    state = server.base / "root-state"

    assert (conf.stat().st_uid, conf.stat().st_mode & 0o777) == (0, 0o640)
    assert conf.stat().st_gid == pwd.getpwnam(USER).pw_gid
    assert (server.base / "var").stat().st_uid == pwd.getpwnam(USER).pw_uid
    assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (0, 0o700)
    rule = (server.folder / "root/etc/sudoers.d/smart").read_text()
    granted = [line for line in rule.splitlines() if line and not line.startswith("#")]
    assert any(
        f"{server.base}/venv/bin/smart-tui-root {server.base}/smart.conf *" in line
        for line in granted
    ), granted
    assert not any("apply.sh" in line or "nginx -t" in line for line in granted)
    # The user itself can write neither the nginx config nor what root trusts.
    probe = server.as_user("sudo", "-n", "-l")
    assert "smart-tui-root" in probe.stdout, probe.stdout + probe.stderr
    touch = subprocess.run(
        ["sh", "-c", f"echo x >> {shlex.quote(str(server.lab.nginx_conf))}"],
        user=USER,
        capture_output=True,
    )
    assert touch.returncode != 0


def test_a_run_as_the_service_user_changes_root_owned_nginx_through_the_helper(
    server: Server,
) -> None:
    doctor = server.as_user("doctor")
    # IMPROVE_PCT=99: never kept, so the revert runs through the helper too.
    ran = server.as_user(
        "--run-once", "--experiment", "001_nginx_workers", "--set", "IMPROVE_PCT=99"
    )

    assert "root helper: config" in doctor.stdout, doctor.stdout + doctor.stderr
    assert "FAIL" not in doctor.stdout, doctor.stdout
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run_id, status, outcome = server.runs()[-1]
    assert status == "done" and outcome in ("KEEP", "REVERT", "INCONCLUSIVE")
    with sqlite3.connect(server.base / "var/smart.db") as db:
        phases = db.execute(
            "select name, status from phases where run_id = ? order by id", [run_id]
        ).fetchall()
    assert ("apply", "done") in phases, phases
    # Root kept its own copy of the baseline for this run, out of the user's reach.
    index = (server.base / "root-state" / run_id / "INDEX").read_text()
    assert str(server.lab.nginx_conf) in index
    assert outcome != "KEEP"
    assert ("revert", "done") in phases, phases
    assert server.conf() == server.original
    assert server.lab.nginx_conf.stat().st_uid == 0


def test_kill_9_mid_run_is_recovered_by_root_from_its_own_copy(server: Server) -> None:
    process = server.background(
        "--run-once",
        "--experiment",
        "001_nginx_workers",
        "--set",
        "EXPERIMENT_SECONDS=60",
    )
    deadline = time.monotonic() + 60
    while server.conf() == server.original and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    applied = server.conf()
    time.sleep(1)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)

    recovered = server.as_user("recover")

    assert b"worker_processes auto;" in applied
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert server.conf() == server.original
    assert server.runs()[-1][1:] == ("aborted", "ABORTED"), server.runs()


def test_an_approved_keep_is_applied_through_the_helper(server: Server) -> None:
    ran = server.as_user(
        "--run-once", "--experiment", "001_nginx_workers", "--set", "APPROVAL=manual"
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert server.conf() == server.original  # pending: still on baseline

    # What the app's Approvals screen calls, run as the service user.
    approve = (
        "from smart_tui import approvals, commands\n"
        "from smart_tui.storage import Store\n"
        "settings = commands.settings_from(None, {})\n"
        "store = Store(settings.database_path)\n"
        "item = approvals.pending(store)[-1]\n"
        "print(approvals.override(store, item.id, 'KEEP', settings=settings)\n"
        "      if item.decision != 'KEEP' else approvals.approve(settings, store, "
        "item.id))\n"
    )
    kept = server.as_user("python", "-c", approve)
    live = server.conf()
    # Then the operator edits the file by hand, and the kept change comes up for
    # its recheck, which would revert to the backup taken before the edit.
    edited = live + b"# tuned by hand after the keep\n"
    server.lab.nginx_conf.write_bytes(edited)
    recheck = server.as_user("--run-once", "--experiment", "001_nginx_workers")
    after_recheck = server.conf()
    server.lab.nginx_conf.write_bytes(server.original)  # baseline for what follows

    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "the variant is live" in kept.stdout or "to KEEP; live" in kept.stdout
    assert b"worker_processes auto;" in live
    assert recheck.returncode == ExitCode.APPLY_FAILED, recheck.stderr
    assert "edited outside smart-tui" in recheck.stderr.strip().splitlines()[-1]
    assert after_recheck == edited
    assert server.runs()[-1][1:] == ("failed", "APPLY_FAILED")


def test_root_trusts_no_file_the_user_could_change(server: Server) -> None:
    script = server.base / "experiments/001_nginx_workers/apply.sh"
    script.chmod(0o775)
    try:
        refused = server.as_user("--run-once", "--experiment", "001_nginx_workers")
        doctor = server.as_user("doctor")
    finally:
        script.chmod(0o755)

    assert refused.returncode == ExitCode.BAD_CONFIG, refused.stderr
    error = refused.stderr.strip().splitlines()[-1]
    assert str(script) in error and "chmod go-w" in error, error
    assert error.count("bad config") == 1, error
    assert "Traceback" not in refused.stderr
    assert server.conf() == server.original
    assert doctor.returncode == ExitCode.CHECKS_FAILED
    failed = [line for line in doctor.stdout.splitlines() if "FAIL" in line]
    assert len(failed) == 1 and str(script) in failed[0], doctor.stdout


def test_the_helper_refuses_what_sudo_does_not_pin(server: Server) -> None:
    # sudo allows the helper with this smart.conf only.
    other = server.folder / "other.conf"
    shutil.copy2(server.base / "smart.conf", other)
    elsewhere = server.as_user("sudo", "-n", server.helper[0], str(other), "test")
    # Without sudo, the helper will not act at all.
    unprivileged = server.as_user(
        "smart-tui-root", str(server.base / "smart.conf"), "test"
    )
    # A change needs root's own snapshot of the run first.
    no_begin = server.as_user(
        "sudo",
        "-n",
        *server.helper,
        "apply",
        "20261204T000000Z-x",
        "001_nginx_workers",
        "auto",
    )
    # Nor does an environment variable choose the file root edits.
    begun = subprocess.run(
        [*server.helper, "begin", "20261204T000001Z-env", "001_nginx_workers"],
        env={
            "PATH": "/usr/bin:/bin",
            "SMART_NGINX_CONF": "/etc/passwd",
            "SMART_NGINX_CONF_": "x",
            "NGINX_CONF": "/etc/passwd",
        },
        capture_output=True,
        text=True,
    )

    assert elsewhere.returncode == 1 and "sudo:" in elsewhere.stderr
    assert unprivileged.returncode == ExitCode.USAGE
    assert "must run as root" in unprivileged.stderr
    reserved = server.as_user(
        *sudo_helper(server), "begin", "LAST", "001_nginx_workers"
    )
    assert reserved.returncode == ExitCode.USAGE and "not a run id" in reserved.stderr
    assert no_begin.returncode == ExitCode.USAGE
    assert "`begin` comes first" in no_begin.stderr
    assert begun.returncode == 0, begun.stderr
    assert begun.stdout.strip() == f"snapshot: {server.lab.nginx_conf}"
    assert server.conf() == server.original


def test_a_hand_edit_made_since_is_never_undone_by_an_old_snapshot(
    server: Server,
) -> None:
    sudo = ["sudo", "-n", *server.helper]
    run = "20261204T000002Z-hand"
    begun = server.as_user(*sudo, "begin", run, "001_nginx_workers")
    applied = server.as_user(*sudo, "apply", run, "001_nginx_workers", "auto")
    # The operator edits the file by hand (as root) while the variant is live.
    edited = server.conf() + b"# tuned by hand\n"
    server.lab.nginx_conf.write_bytes(edited)
    restore = server.as_user(*sudo, "restore", run)
    revert = server.as_user(*sudo, "revert", run, "001_nginx_workers", "auto")
    # A new run that "applies" the no-op baseline, then reverts: the script would
    # put back the stale backup's line, so root puts the run's snapshot back.
    other = "20261204T000005Z-noop"
    server.as_user(*sudo, "begin", other, "001_nginx_workers")
    server.as_user(*sudo, "apply", other, "001_nginx_workers", "baseline")
    stale = server.as_user(*sudo, "revert", other, "001_nginx_workers", "auto")
    after = server.conf()
    server.lab.nginx_conf.write_bytes(server.original)

    assert begun.returncode == 0 and applied.returncode == 0, applied.stderr
    assert restore.returncode == ExitCode.REVERT_FAILED
    assert "edited outside smart-tui" in restore.stderr
    assert revert.returncode == ExitCode.REVERT_FAILED
    assert stale.returncode == ExitCode.REVERT_FAILED
    assert "unlike the run's snapshot; the snapshot was put back" in stale.stderr
    assert after == edited


def test_the_helper_refuses_an_nginx_config_the_user_could_write(
    server: Server,
) -> None:
    os.chown(server.lab.nginx_conf, pwd.getpwnam(USER).pw_uid, -1)
    try:
        test = server.as_user("sudo", "-n", *server.helper, "test")
    finally:
        os.chown(server.lab.nginx_conf, 0, -1)

    assert test.returncode == ExitCode.BAD_CONFIG
    assert f"NGINX_CONF: {server.lab.nginx_conf} belongs to uid" in test.stderr


def test_root_will_not_act_on_state_the_service_user_wrote(server: Server) -> None:
    """A journal the user planted names a snapshot and commands of its choosing."""
    planted = server.folder / "planted"
    snapshot = server.base / "var/runs/planted/snapshot"
    snapshot.mkdir(parents=True)
    (snapshot / "00_x").write_text("chosen by the service user\n")
    (snapshot / "INDEX").write_text(f"00_x\t644\t{planted}\n")
    journal = server.base / "var/journal.json"
    journal.write_text(
        json.dumps(
            {
                "run_id": "planted",
                "experiment_id": "001_nginx_workers",
                "pid": 1,
                "snapshot_dir": str(snapshot),
                "nginx_conf": str(server.lab.nginx_conf),
                "nginx_command": ["/bin/sh", "-c", f"id > {planted}.cmd"],
                "helper": [],
            }
        )
    )

    def as_root(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(server.base / "venv/bin/smart-tui"), *args],
            env={**server_env(server), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        history = as_root("history")
        doctor = as_root("doctor")
        shown = as_root("check-config")  # read-only: allowed, and recovers nothing
        journal_left = journal.exists()
    finally:
        journal.unlink()
        shutil.rmtree(snapshot.parent)

    assert doctor.returncode == ExitCode.USAGE, doctor.stdout + doctor.stderr
    assert shown.returncode == 0 and journal_left
    assert history.returncode == ExitCode.USAGE
    as_root = history
    assert as_root.stderr.strip() == (
        f"smart-tui: usage: var/: {server.base / 'var'} belongs to uid "
        f"{pwd.getpwnam(USER).pw_uid}, not root, and root acts only on files root "
        f"alone can change: chown root {server.base / 'var'}; or run smart-tui as "
        f"{USER}: sudo -u {USER} smart-tui ..."
    )
    assert not planted.exists() and not Path(f"{planted}.cmd").exists()


def test_old_snapshots_are_pruned_by_age_never_the_run_begun(server: Server) -> None:
    helper = Helper.open(str(server.base / "smart.conf"))
    for number in range(KEEP_RUNS + 3):
        helper.begin(f"20991231T0000{number:02d}Z-later", "001_nginx_workers")
    helper.begin("20000101T000000Z-clock-was-behind", "001_nginx_workers")

    kept = [path.name for path in helper.ledger.folder.iterdir() if path.is_dir()]
    assert "20000101T000000Z-clock-was-behind" in kept
    assert len(kept) == KEEP_RUNS


def test_the_callers_resource_limits_do_not_reach_root(server: Server) -> None:
    """RLIMIT_FSIZE passes through sudo: root's copies must never be cut short."""

    def sudo_with(hard: int, *args: str) -> subprocess.CompletedProcess[str]:
        def small_files() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))

        return subprocess.run(
            ["sudo", "-n", *server.helper, *args],
            user=USER,
            group=_group(),
            extra_groups=[],
            env=server_env(server),
            preexec_fn=small_files,
            capture_output=True,
            text=True,
            timeout=60,
        )

    # A soft limit is lifted: the whole change goes through.
    run = "20261204T000003Z-limits"
    unlimited = resource.RLIM_INFINITY
    begun = sudo_with(unlimited, "begin", run, "001_nginx_workers")
    applied = sudo_with(unlimited, "apply", run, "001_nginx_workers", "auto")
    live = server.conf()
    reverted = sudo_with(unlimited, "revert", run, "001_nginx_workers", "auto")
    # A hard limit needs CAP_SYS_RESOURCE to lift, which root may lack in a
    # container: then the helper refuses before it changes anything.
    hard = sudo_with(100, "begin", "20261204T000004Z-limits", "001_nginx_workers")

    assert begun.returncode == 0 and applied.returncode == 0, applied.stderr
    assert live == server.original.replace(
        b"worker_processes 1;", b"worker_processes auto;"
    )
    assert reverted.returncode == 0, reverted.stderr
    assert server.conf() == server.original
    if hard.returncode != 0:
        assert hard.returncode == ExitCode.USAGE
        assert "RLIMIT_FSIZE is limited to 100 by the caller" in hard.stderr
    else:
        assert "snapshot:" in hard.stdout


def test_root_will_not_use_a_var_others_may_write(tmp_path: Path) -> None:
    base = workspace(tmp_path, "")
    (base / "var").mkdir()
    (base / "var").chmod(0o1777)  # root's, but anyone may add a journal to it

    refused = smart(base, "history")

    assert refused.returncode == ExitCode.USAGE
    assert refused.stderr.strip() == (
        f"smart-tui: usage: var/: {base / 'var'} is writable by group or others "
        f"(mode 1777); root will not act on it: chmod go-w {base / 'var'}"
    )


def test_root_will_not_run_a_config_another_user_wrote(tmp_path: Path) -> None:
    """A smart.conf nobody owns would choose NGINX_CMD, which root then runs."""
    ran = tmp_path / "ran-as-root"
    base = workspace(
        tmp_path,
        f"TARGET_URL=http://127.0.0.1:9/\nNGINX_CONF={tmp_path / 'nginx.conf'}\n"
        f"NGINX_CMD='/bin/sh -c \"id > {ran}\" x'\n",
    )
    (tmp_path / "nginx.conf").write_text("events {}\n")
    os.chown(base / "smart.conf", pwd.getpwnam(USER).pw_uid, -1)

    doctor = smart(base, "doctor")
    history = smart(base, "history")

    for refused in (doctor, history):
        assert refused.returncode == ExitCode.USAGE, refused.stdout
        assert f"the config file: {base / 'smart.conf'} belongs to uid" in (
            refused.stderr
        )
    assert not ran.exists()


# --- the trust checks on their own (as root, in this process) -------------------


def _nobody_owns(path: Path) -> None:
    os.chown(path, pwd.getpwnam(USER).pw_uid, -1, follow_symlinks=False)


def test_a_file_or_link_target_the_user_owns_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "experiments"
    (tree / "001_x").mkdir(parents=True)
    (tree / "001_x/apply.sh").write_text("true\n")
    require_trusted_tree(tree, "the experiments folder")  # root's alone: fine

    theirs = tmp_path / "theirs.sh"
    theirs.write_text("true\n")
    _nobody_owns(theirs)
    (tree / "_lib").symlink_to(theirs)
    with pytest.raises(ConfigError, match=f"{theirs} belongs to uid"):
        require_trusted_tree(tree, "the experiments folder")
    (tree / "_lib").unlink()

    # A link to a root-owned folder whose contents another user owns.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "apply.sh").write_text("true\n")
    _nobody_owns(elsewhere / "apply.sh")
    (tree / "002_linked").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=f"{elsewhere / 'apply.sh'} belongs to uid"):
        require_trusted_tree(tree, "the experiments folder")
    (tree / "002_linked").unlink()

    _nobody_owns(tree / "001_x")
    with pytest.raises(ConfigError, match="001_x belongs to uid"):
        require_trusted_tree(tree, "the experiments folder")


def test_only_a_sticky_folder_above_may_be_world_writable(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    conf = folder / "smart.conf"
    conf.write_text("")
    folder.chmod(0o1777)
    assert require_trusted(conf, "the config file") == conf
    folder.chmod(0o777)
    with pytest.raises(ConfigError, match=r"writable by group or others \(mode 0777\)"):
        require_trusted(conf, "the config file")


def test_the_helper_needs_a_named_nginx_and_a_private_state_folder(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "smart.conf"
    conf.write_text("IMPROVE_PCT=5\n")
    conf.chmod(0o600)
    helper = str(Path(sys.executable).parent / "smart-tui-root")

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [helper, *args], capture_output=True, text=True, timeout=60
        )

    shared = tmp_path / "shared"  # sticky and world-writable, like /tmp
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    (shared / "nginx.conf").write_text("events {}\n")
    (tmp_path / "sticky").mkdir()
    sticky = tmp_path / "sticky" / "smart.conf"
    sticky.write_text(
        f"NGINX_CONF={shared / 'nginx.conf'}\nNGINX_CMD=/usr/sbin/nginx\n"
    )
    sticky.chmod(0o600)
    in_shared_folder = call(str(sticky), "test")

    lab_only = call(str(conf), "test")
    conf.write_text("NGINX_CONF=/etc/nginx/nginx.conf\nNGINX_CMD=/usr/sbin/nginx\n")
    (tmp_path / "root-state").mkdir(mode=0o755)
    loose = call(str(conf), "test")
    relative = call("smart.conf", "test")
    unknown = call(str(conf), "rm", "-rf")

    # Others could create the backup a script writes beside the config first.
    assert in_shared_folder.returncode == ExitCode.BAD_CONFIG
    assert f"{shared} is writable by group or others" in in_shared_folder.stderr
    assert lab_only.returncode == ExitCode.BAD_CONFIG
    assert "NGINX_CONF and NGINX_CMD must be set for the root helper" in (
        lab_only.stderr
    )
    assert loose.returncode == ExitCode.BAD_CONFIG and "chmod 700" in loose.stderr
    assert relative.returncode == ExitCode.USAGE
    assert unknown.returncode == ExitCode.USAGE
    for result in (lab_only, loose, relative, unknown):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
