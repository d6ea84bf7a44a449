"""What root may trust: files and folders that root alone can change.

A path is trusted when it and every folder above it belong to root and are not
writable by group or others; a root-owned sticky folder such as /tmp may sit above
it (nobody else can rename what root put there), but never directly hold a file root
changes. Used by the root helper and by smart-tui itself when it runs as root."""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from smart_tui.errors import ConfigError


def owned_by_root(path: Path, what: str, *, sticky_ok: bool) -> os.stat_result:
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != 0:
        raise ConfigError(
            f"{what}: {path} belongs to uid {info.st_uid}, not root, and root acts "
            f"only on files root alone can change: chown root "
            f"{shlex.quote(str(path))}"
        )
    shared = mode & 0o022
    if shared and not (sticky_ok and stat.S_ISDIR(info.st_mode) and mode & 0o1000):
        raise ConfigError(
            f"{what}: {path} is writable by group or others (mode {mode:04o}); "
            f"root will not act on it: chmod go-w {shlex.quote(str(path))}"
        )
    return info


def require_trusted(path: Path, what: str) -> Path:
    """``path`` resolved, after proving it and every folder above it belong to root
    and are writable by root alone (a root-owned sticky folder such as /tmp may sit
    above it: nobody else can rename what root put there)."""
    try:
        real = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise ConfigError(f"{what}: {path} does not exist") from None
    owned_by_root(real, what, sticky_ok=False)
    for folder in real.parents:
        owned_by_root(folder, what, sticky_ok=True)
    return real


def require_trusted_tree(top: Path, what: str, seen: set[Path] | None = None) -> None:
    """Every file, folder and link target under ``top`` is root's alone, and so is
    everything inside a folder a link leads to."""
    seen = set() if seen is None else seen
    real = require_trusted(top, what)
    if real in seen:
        return
    seen.add(real)
    for folder, dirnames, filenames in os.walk(real):
        for name in [*dirnames, *filenames]:
            path = Path(folder) / name
            if not path.is_symlink():
                owned_by_root(path, what, sticky_ok=False)
            elif path.is_dir():
                require_trusted_tree(path, what, seen)
            else:
                require_trusted(path, what)


def require_trusted_file(path: Path, what: str) -> None:
    """A file root changes: root's alone, and so is its folder, with no sticky
    exception (scripts write siblings such as a backup there: in a shared folder
    another user could create that sibling first)."""
    if path.exists() or path.is_symlink():
        require_trusted(path, what)
    folder = require_trusted(path.parent, what)
    owned_by_root(folder, what, sticky_ok=False)
