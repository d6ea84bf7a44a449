"""Proof that nginx is serving the config on disk after a reload.

``nginx -s reload`` exits 0 as soon as the signal is sent; when the new config fails
at reload time (a port already taken, say) the master logs ``[emerg]`` and keeps its
old workers. So a reload counts as live only when a new generation of worker
processes appeared and the error log gained no ``[emerg]`` or ``[alert]`` line."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger("smart_tui.nginx_live")

_SEVERE = re.compile(r"\[(emerg|alert)\]")
_POLL_S = 0.05


@dataclass(frozen=True)
class Generation:
    """nginx's processes and the error log's length at one moment."""

    master_pid: int | None
    children: frozenset[int]
    error_log_size: int


def _master_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if psutil.pid_exists(pid) else None


def _children(master_pid: int | None) -> frozenset[int]:
    if master_pid is None:
        return frozenset()
    try:
        return frozenset(child.pid for child in psutil.Process(master_pid).children())
    except psutil.Error:
        return frozenset()


def _accepting(pids: frozenset[int]) -> list[int]:
    """Old workers that still accept connections: until the master tells them to
    quit they share the listening socket with the new generation."""
    still = []
    for pid in pids:
        try:
            title = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if "shutting down" not in title:
            still.append(pid)
    return still


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_generation(pid_file: Path, error_log: Path) -> Generation:
    master = _master_pid(pid_file)
    return Generation(master, _children(master), _size(error_log))


def severe_lines_since(error_log: Path, offset: int) -> list[str]:
    """``[emerg]`` and ``[alert]`` lines appended to ``error_log`` after ``offset``."""
    try:
        with error_log.open("rb") as handle:
            handle.seek(offset)
            appended = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in appended.splitlines() if _SEVERE.search(line)]


@dataclass(frozen=True)
class NginxWatch:
    """Where to look for the master's pid and its error log."""

    pid_file: Path
    error_log: Path

    def snapshot(self) -> Generation:
        return read_generation(self.pid_file, self.error_log)

    def wait_for_reload(self, before: Generation, timeout_s: float) -> str | None:
        """None once a new worker generation serves; else why the reload did not
        take effect, in one line."""
        if before.master_pid is None:
            log.warning(
                "cannot prove the reload: no live nginx master in %s", self.pid_file
            )
            return None
        deadline = time.monotonic() + timeout_s
        while True:
            severe = severe_lines_since(self.error_log, before.error_log_size)
            if severe:
                return f"nginx logged after the reload: {severe[-1].strip()[:300]}"
            now = self.snapshot()
            if now.master_pid != before.master_pid:
                return f"the nginx master (pid {before.master_pid}) is gone"
            if now.children - before.children and not _accepting(before.children):
                return None
            if time.monotonic() >= deadline:
                return (
                    f"no new nginx workers within {timeout_s:g} s of the reload; "
                    "nginx is still serving the old config"
                )
            time.sleep(_POLL_S)
