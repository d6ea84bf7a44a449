"""One run at a time on this host.

An exclusive ``flock`` on ``var/run.lock``, released by the kernel when the holder
dies, so a lock left by a killed process is never stale. The file names the holder so
that a refused start can say who holds it."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from smart_tui.errors import LockHeld
from smart_tui.storage import utc_now


@dataclass
class RunLock:
    """Context manager holding the host-wide run lock."""

    path: Path
    purpose: str
    _fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            raise LockHeld(f"{self._describe(holder)}; wait for it to finish") from None
        self._fd = fd
        self.update(self.purpose)
        return self

    def update(self, purpose: str) -> None:
        """Say what the lock is held for now (e.g. once the run id is known)."""
        if self._fd is None:
            return
        holder = {"pid": os.getpid(), "since": utc_now(), "purpose": purpose}
        data = json.dumps(holder).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def _describe(holder_text: str) -> str:
        try:
            holder = json.loads(holder_text)
            return (
                f"{holder['purpose']} holds the lock since {holder['since']} "
                f"(pid {holder['pid']})"
            )
        except (ValueError, KeyError, TypeError):
            return "another smart-tui process holds the run lock"
