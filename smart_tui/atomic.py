"""Replacing a file so that no reader ever sees it half written.

The bytes go to a temporary file in the same folder, are fsynced, given their mode,
then renamed over the target: a reader (nginx, node_exporter, a recovery after a
power cut) sees the old file or the new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(
    path: Path, data: str | bytes, *, mode: int = 0o644, suffix: str = ""
) -> None:
    """Write ``data`` to ``path``; ``suffix`` names the temporary file (e.g. .tmp
    so that a reader globbing ``*.prom`` never picks it up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, temp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix, dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, mode)
        _keep_owner(temp_name, path)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _keep_owner(temp_name: str, path: Path) -> None:
    """Give the new file the old one's owner and group where this process may (root
    restoring a file some other user owns)."""
    try:
        info = path.stat()
        if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(temp_name, info.st_uid, info.st_gid)
    except (FileNotFoundError, PermissionError):
        pass
