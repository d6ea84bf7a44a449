"""``smart-tui doctor``: can this host run experiments safely, and if not, what to fix.

``diagnose(settings)`` returns one ``Check`` per question (ok, FAIL or warn, what was
looked at, the fix). It changes nothing: privileged commands are only listed with
``sudo -n -l``, the database write test is rolled back, no recovery or reload runs;
``nginx -t`` is the one command it actually runs."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from smart_tui import spool
from smart_tui.config import SECRET_KEYS, parse_config_text, private_group
from smart_tui.errors import SmartError
from smart_tui.experiments import Experiment, discover
from smart_tui.journal import JOURNAL_NAME
from smart_tui.scripts import run_command
from smart_tui.settings import Settings
from smart_tui.target import Target, resolve_target

_SUDO_TIMEOUT_S = 10.0
_HTTP_TIMEOUT_S = 3.0
# The helper walks its own libraries to prove root owns them: seconds, not minutes.
_HELPER_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    status: str  # ok, FAIL or warn
    what: str
    fix: str = ""

    def line(self) -> str:
        fix = f"  {self.fix}" if self.fix else ""
        return f"{self.status:<4}  {self.what}{fix}"


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _owner(path: Path) -> str:
    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _q(path: Path) -> str:
    return shlex.quote(str(path))


# Privileged commands


def _split_sudo(argv: list[str]) -> tuple[list[str], list[str]]:
    """(sudo and its options, the command) of an ``NGINX_CMD`` starting with sudo."""
    index = 1
    while index < len(argv) and argv[index].startswith("-"):
        # These sudo options take a value as the next word.
        index += 2 if argv[index] in ("-u", "-g", "-C", "-D", "-h", "-p") else 1
    return argv[:index], argv[index:]


def _sudo_allows(sudo: list[str], command: list[str], cwd: Path) -> Check:
    shown = shlex.join(command)
    listing = [sudo[0], "-n", *(w for w in sudo[1:] if w != "-n"), "-l", *command]
    try:
        result = subprocess.run(
            listing,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_SUDO_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("FAIL", f"sudo -n -l {shown}: {exc}", "install sudo")
    if result.returncode == 0:
        return Check("ok", f"sudo -n runs `{shown}` without a password")
    # sudo -l names no reason when the user has rules but none for this command.
    said = (result.stderr or result.stdout).strip().splitlines()[-1:] or [
        "no sudoers rule allows it"
    ]
    return Check(
        "FAIL",
        f"sudo -n refuses `{shown}` for {_user()}: {said[0][:200]}",
        f"allow it NOPASSWD in /etc/sudoers.d/smart (deploy/install.sh renders "
        f"the rule: {_user()} ALL = (root) NOPASSWD: {shown})",
    )


def _master_pid(target: Target) -> int | None:
    try:
        return int(target.watch.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _privileged(target: Target) -> Iterator[Check]:
    """Each exact command a run gives nginx, as the runner will run it."""
    argv = target.nginx.command
    conf_dir = target.nginx.conf.parent
    wanted = [[*argv, "-t"], [*argv, "-s", "reload"]]
    if argv and Path(argv[0]).name == "sudo":
        sudo, _ = _split_sudo(argv)
        for command in wanted:
            yield _sudo_allows(sudo, command[len(sudo) :], conf_dir)
        return

    found = shutil.which(argv[0]) if argv else None
    if found is None:
        yield Check(
            "FAIL",
            f"nginx command `{shlex.join(argv)}` is not runnable",
            "set NGINX_CMD to the nginx binary, e.g. 'sudo -n /usr/sbin/nginx'",
        )
        return
    yield Check("ok", f"`{shlex.join(argv)}` is runnable ({found})")
    pid = _master_pid(target)
    if pid is None:
        yield Check(
            "warn",
            f"no nginx master pid in {target.watch.pid_file}; a reload cannot work",
            "start nginx, or set NGINX_PID_FILE",
        )
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        yield Check(
            "FAIL",
            f"nginx master pid {pid} from {target.watch.pid_file} is not running",
            "start nginx",
        )
    except PermissionError:
        yield Check(
            "FAIL",
            f"{_user()} may not signal the nginx master (pid {pid}): "
            f"`{shlex.join(argv)} -s reload` will fail",
            "use NGINX_CMD='sudo -n nginx' with a sudoers rule",
        )
    else:
        yield Check("ok", f"{_user()} may signal the nginx master (pid {pid})")


def _root_helper(target: Target) -> Iterator[Check]:
    """ROOT_HELPER_CMD through sudo, as a run calls it: its own trust checks."""
    helper = target.hands.helper
    result = run_command(
        [*helper, "check"], cwd=Path("/"), env={}, timeout_s=_HELPER_TIMEOUT_S
    )
    said = result.output.strip().splitlines()
    if result.ok:
        yield from (
            Check("ok", f"root helper: {line[4:]}")
            for line in said
            if line.startswith("ok: ")
        )
    else:
        last = (said or [""])[-1]
        if last.startswith("sudo:"):
            fix = (
                "sudo has no NOPASSWD rule for this exact command: ROOT_HELPER_CMD "
                "must match /etc/sudoers.d/smart (`sudo -l` lists it); re-run "
                "deploy/install.sh to put both back"
            )
        else:
            fix = "fix what it names; deploy/install.sh sets these owners and modes"
        yield Check("FAIL", f"`{shlex.join(helper)} check` fails: {last[:600]}", fix)
    for path, why in (
        (target.nginx.conf, "to prove each change and revert"),
        (target.watch.error_log, "to see nginx's [emerg] lines after a reload"),
    ):
        if not os.access(path, os.R_OK):
            yield Check(
                "FAIL",
                f"{path} is not readable by {_user()} ({why})",
                f"let {_user()} read it, e.g. usermod -aG adm {_user()}",
            )


def _experiment_sudo(settings: Settings) -> Iterator[Check]:
    """Experiment commands that call sudo themselves must not prompt either."""
    for entry in discover(settings.experiments_path):
        if not isinstance(entry, Experiment):
            continue
        commands = [v.apply for v in entry.meta.variants] + [entry.meta.revert]
        for command in commands:
            try:
                argv = shlex.split(command)
            except ValueError:
                continue
            if not argv or Path(argv[0]).name != "sudo":
                continue
            sudo, rest = _split_sudo(argv)
            if "-n" not in sudo:
                yield Check(
                    "FAIL",
                    f"{entry.id}: `{command}` may prompt for a password",
                    "write `sudo -n ...` in meta.json",
                )
            yield _sudo_allows(sudo, rest, entry.path)


# Files and folders


def _config_file(settings: Settings) -> Iterator[Check]:
    path = settings.config_file
    if path is None:
        yield Check("warn", "no smart.conf found; defaults only", "see README")
        return
    mode = _mode(path)
    secrets = sorted(
        item.key
        for item in parse_config_text(path.read_text(encoding="utf-8"), str(path))
        if item.key in SECRET_KEYS and item.value
    )
    if secrets and mode & 0o077 and (mode & 0o037 or not private_group(path)):
        yield Check(
            "FAIL",
            f"{path} holds {', '.join(secrets)} but has mode {mode:04o}",
            f"chmod 600 {_q(path)}",
        )
    elif mode & 0o022:
        yield Check(
            "FAIL",
            f"{path} is writable by group or others (mode {mode:04o}): they could "
            "point NGINX_CMD at any command",
            f"chmod go-w {_q(path)}",
        )
    else:
        yield Check("ok", f"{path} mode {mode:04o}, owner {_owner(path)}")


def _nginx_binary(target: Target) -> Iterator[Check]:
    argv = target.nginx.command
    if argv and Path(argv[0]).name == "sudo":
        _, argv = _split_sudo(argv)
    found = shutil.which(argv[0]) if argv else None
    if found is None:
        return  # reported with the privileged commands
    binary = Path(found).resolve()
    mode = _mode(binary)
    if mode & 0o022:
        yield Check(
            "FAIL",
            f"nginx binary {binary} is writable by group or others ({mode:04o})",
            f"chmod go-w {_q(binary)}",
        )
    else:
        yield Check("ok", f"nginx binary {binary} mode {mode:04o}, {_owner(binary)}")


def _nginx_config(target: Target) -> Iterator[Check]:
    conf = target.nginx.conf
    if not conf.is_file():
        yield Check("FAIL", f"nginx config {conf} does not exist", "set NGINX_CONF")
        return
    mode = _mode(conf)
    if mode & 0o002:
        yield Check(
            "FAIL",
            f"nginx config {conf} is world-writable ({mode:04o})",
            f"chmod o-w {_q(conf)}",
        )
    # Experiments edit the file, and a failed revert is undone by rewriting it
    # through a temporary file beside it: both need write access.
    for path in (conf, conf.parent):
        if not os.access(path, os.W_OK):
            yield Check(
                "FAIL",
                f"{path} is not writable by {_user()} (owner {_owner(path)}, "
                f"{_mode(path):04o}): experiments and the snapshot restore write it",
                f"give {_user()} write access, e.g. chgrp {_user()} {_q(path)} && "
                f"chmod g+w {_q(path)}",
            )
            return
    yield Check("ok", f"nginx config {conf} writable by {_user()}, mode {mode:04o}")


def _folder(path: Path, name: str, *, world_writable: str) -> Iterator[Check]:
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            yield Check("ok", f"{name} {path} will be created")
        else:
            yield Check(
                "FAIL",
                f"{name} {path} is missing and {parent} is not writable by {_user()}",
                f"mkdir -p {_q(path)} && chown {_user()} {_q(path)}",
            )
        return
    mode = _mode(path)
    if not os.access(path, os.W_OK | os.X_OK):
        yield Check(
            "FAIL",
            f"{name} {path} is not writable by {_user()} (owner {_owner(path)}, "
            f"{mode:04o})",
            f"chown {_user()} {_q(path)} (or chattr -i if it is immutable)",
        )
    elif mode & 0o002 and not mode & stat.S_ISVTX:
        yield Check(
            world_writable,
            f"{name} {path} is world-writable ({mode:04o})",
            f"chmod o-w {_q(path)}",
        )
    else:
        yield Check("ok", f"{name} {path} writable by {_user()}, mode {mode:04o}")


def _database(path: Path) -> Iterator[Check]:
    if not path.exists():
        yield from _folder(path.parent, "database folder", world_writable="FAIL")
        return
    mode = _mode(path)
    if mode & 0o002:
        yield Check(
            "FAIL",
            f"database {path} is world-writable ({mode:04o})",
            f"chmod o-w {_q(path)}",
        )
    # sqlite opens a file it cannot write read-only and fails at the first write;
    # take the write lock and roll back to find out now.
    problem = None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=1.0)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"PRAGMA user_version = {version}")
        finally:
            conn.rollback()
            conn.close()
    except sqlite3.Error as exc:
        problem = str(exc)
    if problem is None and not os.access(path.parent, os.W_OK):
        problem = f"its folder {path.parent} is not writable (WAL files live there)"
    if problem is not None:
        yield Check(
            "FAIL",
            f"database {path} is not writable by {_user()}: {problem}",
            f"chown {_user()} {_q(path)} {_q(path.parent)} (or chattr -i)",
        )
    else:
        yield Check("ok", f"database {path} writable by {_user()}, mode {mode:04o}")


# Live state


def _nginx_test(target: Target) -> Check:
    result = target.nginx.test()
    if result.ok:
        return Check("ok", f"`{shlex.join(target.nginx.command)} -t` passes")
    # nginx's last line only says "test failed"; the reason is the [emerg] line.
    reasons = [line for line in result.output.splitlines() if "[emerg]" in line] or [
        result.describe()
    ]
    return Check(
        "FAIL",
        f"nginx -t fails: {reasons[0][:300]}",
        f"fix {target.nginx.conf} (or `smart-tui recover` after a crashed run)",
    )


def _answers(url: str) -> Check:
    try:
        with httpx.Client(trust_env=False, timeout=_HTTP_TIMEOUT_S) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        return Check(
            "FAIL",
            f"target {url} does not answer: {type(exc).__name__}",
            "start nginx (or `smart-tui lab start`), or fix TARGET_URL",
        )
    if response.status_code >= 500:
        return Check(
            "warn",
            f"target {url} answers HTTP {response.status_code}",
            "check the backend",
        )
    return Check("ok", f"target {url} answers HTTP {response.status_code}")


def _leftovers(settings: Settings) -> Iterator[Check]:
    journal = settings.var_path / JOURNAL_NAME
    if journal.exists():
        yield Check(
            "FAIL",
            f"{journal} names a run that did not finish",
            "run `smart-tui recover` (any command does it on start)",
        )
    waiting = spool.pending(settings.var_path)
    if waiting:
        yield Check(
            "warn",
            f"{len(waiting)} run record(s) spooled in {waiting[0].parent} after a "
            "database failure",
            "imported at the next start of any command once the database is writable",
        )


def diagnose(settings: Settings) -> list[Check]:
    """Every check, in the order an operator would fix them."""
    checks = [*_config_file(settings)]
    checks += _folder(settings.var_path, "var/", world_writable="FAIL")
    checks += _database(settings.database_path)
    checks += _folder(settings.www_path, "www/", world_writable="warn")
    checks += _leftovers(settings)
    try:
        target = resolve_target(settings)
    except SmartError as exc:
        return [*checks, Check("FAIL", exc.message, "")]
    if target.hands.helper:
        # Root runs nginx and the scripts: the helper checks what it trusts, and
        # `nginx -t` (through it) says nothing more when it refuses.
        helper = list(_root_helper(target))
        checks += helper
        if not any(check.status == "FAIL" for check in helper):
            checks.append(_nginx_test(target))
    else:
        checks += _privileged(target)
        checks += _experiment_sudo(settings)
        checks += _nginx_binary(target)
        checks += _nginx_config(target)
        checks.append(_nginx_test(target))
    checks.append(_answers(target.url))
    return checks
