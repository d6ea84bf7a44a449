"""``smart-tui doctor`` against the lab: all ok on a healthy setup, one FAIL line with
its fix per problem, exit 11; and ``sudo -n`` checked for a user sudo refuses.

Unwritable files use ``chattr +i`` (root ignores modes). The sudo check runs in a
forked child that drops to ``nobody``: exec'ing Python as nobody is impossible here
(the interpreter lives under /root), so the modules are imported before the fork."""

from __future__ import annotations

import encodings.idna  # noqa: F401  (looked up lazily; nobody cannot read the stdlib)
import importlib.readers  # noqa: F401
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from smart_tui.config import load_settings
from smart_tui.doctor import diagnose
from smart_tui.errors import ExitCode
from smart_tui.lab import LabInfo
from smart_tui.scripts import never_prompt
from smart_tui.storage import Store
from smart_tui.target import resolve_target

REPO = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^(ok  |FAIL|warn)  \S")


@pytest.fixture
def base(tmp_path: Path, lab: LabInfo) -> Path:
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    (tmp_path / "smart.conf").write_text("PROBE_RATE_RPS=100\n")
    Store(tmp_path / "var" / "smart.db").close()
    (tmp_path / "www").mkdir()
    return tmp_path


def doctor(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMART_")}
    env["SMART_CONFIG"] = str(base / "smart.conf")
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "smart_tui", "-q", "doctor", *args],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def failures(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("FAIL")]


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    subprocess.run(["chattr", "+i", *map(str, paths)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def test_healthy_lab_is_all_ok(base: Path, lab: LabInfo) -> None:
    done = doctor(base)

    assert done.returncode == ExitCode.OK, done.stdout
    lines = done.stdout.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert not failures(done.stdout)
    assert any(f"`{shlex.join(lab.nginx_cmd)} -t` passes" in line for line in lines)
    assert any(f"target {lab.url} answers HTTP 200" in line for line in lines)
    assert any("may signal the nginx master" in line for line in lines)


def test_each_problem_is_one_fail_line_with_its_fix(base: Path, lab: LabInfo) -> None:
    conf = base / "smart.conf"
    conf.write_text(
        "COACH_URL=https://coach.example/\nCOACH_TOKEN=s3cret\n"
        f"TARGET_URL=http://127.0.0.1:9/\nNGINX_CONF={lab.nginx_conf}\n"
        f"NGINX_CMD='{shlex.join(lab.nginx_cmd)}'\n"
        f"NGINX_PID_FILE={lab.prefix / 'logs' / 'nginx.pid'}\n"
    )
    conf.chmod(0o644)
    (base / "var" / "journal.json").write_text("{}")
    baseline = lab.nginx_conf.read_bytes()
    lab.nginx_conf.write_bytes(baseline + b"\nbogus_directive on;\n")
    try:
        with immutable(base / "var" / "smart.db", base / "www"):
            done = doctor(base)
    finally:
        lab.nginx_conf.write_bytes(baseline)

    assert done.returncode == ExitCode.CHECKS_FAILED
    assert done.stderr.strip().endswith("6 check(s) failed")
    assert "s3cret" not in done.stdout
    found = failures(done.stdout)
    expected = [
        ("holds COACH_TOKEN but has mode 0644", f"chmod 600 {conf}"),
        ("smart.db is not writable by root", "chattr -i"),
        ("www/ ", "not writable by root"),
        ("journal.json names a run that did not finish", "smart-tui recover"),
        ("nginx -t fails", 'unknown directive "bogus_directive"'),
        ("target http://127.0.0.1:9/ does not answer", "fix TARGET_URL"),
    ]
    assert len(found) == len(expected), found
    for (what, fix), line in zip(expected, found, strict=True):
        assert what in line and fix in line, line


def test_settings_sudo_gains_n_and_nginx_cmd_never_prompts(lab: LabInfo) -> None:
    assert never_prompt(["sudo", "nginx"]) == ["sudo", "-n", "nginx"]
    assert never_prompt(["sudo", "-n", "nginx"]) == ["sudo", "-n", "nginx"]
    assert never_prompt(["/usr/sbin/nginx", "-t"]) == ["/usr/sbin/nginx", "-t"]

    settings = load_settings(
        overrides={
            "TARGET_URL": lab.url,
            "NGINX_CONF": str(lab.nginx_conf),
            "NGINX_CMD": f"sudo {shlex.join(lab.nginx_cmd)}",
        },
        environ={},
    )
    assert resolve_target(settings).nginx.command[:2] == ["sudo", "-n"]


def as_nobody(settings_path: Path) -> list[str]:
    """The doctor's lines when run by ``nobody``, in a forked child."""
    settings = load_settings(config_path=settings_path, environ={})
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, diagnose, report, exit
        os.close(read_fd)
        code = 0
        try:
            nobody = pwd.getpwnam("nobody")
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            lines = [check.line() for check in diagnose(settings)]
            os.write(write_fd, json.dumps(lines).encode())
        except BaseException as exc:
            os.write(write_fd, json.dumps([f"child failed: {exc!r}"]).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    lines: list[str] = json.loads(data)
    return lines


def test_sudo_that_would_prompt_is_a_fail_with_the_exact_command(
    base: Path, lab: LabInfo
) -> None:
    # pytest's folders are root's alone: let nobody through to read the files.
    for folder in [base, *base.parents[:2]]:
        folder.chmod(folder.stat().st_mode | 0o001)
    nginx = shlex.join(lab.nginx_cmd)
    conf = base / "smart.conf"
    conf.write_text(
        f"TARGET_URL={lab.url}\nNGINX_CONF={lab.nginx_conf}\n"
        f"NGINX_CMD='sudo {nginx}'\n"
        f"NGINX_PID_FILE={lab.prefix / 'logs' / 'nginx.pid'}\n"
    )

    lines = as_nobody(conf)

    found = failures("\n".join(lines))
    # sudo's reason depends on whether nobody has other rules on this host.
    reasons = ("sudo: a password is required", "no sudoers rule allows it")
    assert any(
        f"sudo -n refuses `{nginx} -t` for nobody: " in line
        and any(reason in line for reason in reasons)
        and f"nobody ALL = (root) NOPASSWD: {nginx} -t" in line
        for line in found
    ), lines
    assert any(f"sudo -n refuses `{nginx} -s reload`" in line for line in found)
    assert any(
        line.startswith("FAIL  nginx -t fails") and "a password is required" in line
        for line in found
    )
    assert any(f"{base / 'var'} is not writable by nobody" in line for line in found)
    assert any(f"target {lab.url} answers HTTP 200" in line for line in lines)
