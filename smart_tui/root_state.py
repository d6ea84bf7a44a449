"""``root-state/``: the root helper's own record of the files it changes.

Per run, ``begin`` saves a snapshot of the watched files and ``LEFT``: their digests
as the helper last left them, or the pid of a helper running a script ("busy").
``LAST`` holds, across runs, the digests after the helper's latest change to each
file. A change or restore over bytes the helper did not leave is refused, so a hand
edit made since is never undone, whatever the service user asks."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from smart_tui.atomic import write_atomically
from smart_tui.errors import SmartError, UsageError
from smart_tui.snapshot import Snapshot

# Snapshots of this many runs are kept, the most recently used first.
KEEP_RUNS = 20
# A change cut short (the helper killed by root, a power cut) may be undone without
# the digest check for this long: the next start of smart-tui recovers it. After
# that, whatever the file holds is somebody's edit.
BUSY_GRACE_S = 86400.0
LEFT = "LEFT"
LAST = "LAST"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def digests(paths: list[Path]) -> dict[str, str | None]:
    """sha256 of each file now; None for a file that does not exist."""
    return _digested(Snapshot.take(paths).files)


def _digested(files: Mapping[Path, bytes | None]) -> dict[str, str | None]:
    return {
        str(path): None if data is None else hashlib.sha256(data).hexdigest()
        for path, data in files.items()
    }


def _read_json(path: Path) -> dict[str, object]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        raise SmartError(f"{path} is unreadable; remove it by hand") from None
    return value if isinstance(value, dict) else {}


def _write_json(path: Path, value: object) -> None:
    write_atomically(path, json.dumps(value, indent=2), mode=0o600)


@dataclass(frozen=True)
class Ledger:
    """The folder ``root-state/`` (root's, mode 0700)."""

    folder: Path

    def run_dir(self, run_id: str) -> Path:
        if not _RUN_ID.fullmatch(run_id) or run_id in (LEFT, LAST):
            raise UsageError(f"RUN {run_id!r} is not a run id")
        return self.folder / run_id

    def begin(self, run_id: str, paths: list[Path]) -> Snapshot:
        """Snapshot ``paths`` for the run (afresh when it was begun before)."""
        folder = self.run_dir(run_id)
        snapshot = Snapshot.take(paths)
        shutil.rmtree(folder, ignore_errors=True)
        snapshot.save(folder)
        self._left(folder, _digested(snapshot.files), applied=False)
        others = sorted(
            (p for p in self.folder.iterdir() if p.is_dir() and p != folder),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for stale in others[KEEP_RUNS - 1 :]:
            shutil.rmtree(stale, ignore_errors=True)
        return snapshot

    def begun(self, run_id: str) -> Path:
        folder = self.run_dir(run_id)
        if not (folder / LEFT).is_file():
            raise UsageError(
                f"run {run_id} has no snapshot in {self.folder}; `begin` comes first"
            )
        return folder

    def require_as_left(
        self,
        run_id: str,
        paths: list[Path],
        failed: type[SmartError],
        *,
        first_change: bool = False,
    ) -> None:
        """Raise ``failed`` unless ``paths`` hold what the helper left for the run.
        ``first_change`` (a revert before any apply in this run: a recheck undoing
        a kept change) also compares with the helper's last change of any run."""
        left = _read_json(self.begun(run_id) / LEFT)
        busy = left.get("busy")
        if isinstance(busy, list) and _alive(*busy):
            raise failed(
                f"another smart-tui-root (pid {busy[0]}) is still changing run "
                f"{run_id}'s files; wait for it (kill -CONT {busy[0]} if it was "
                "stopped)"
            )
        if isinstance(busy, list) and time.time() - float(busy[1]) < BUSY_GRACE_S:
            return  # that change was cut short: its bytes are nobody's choice
        now = digests(paths)
        expected = left.get("files")
        mismatch = [
            p
            for p in now
            if not isinstance(expected, dict) or now[p] != expected.get(p)
        ]
        if not mismatch and first_change and not left.get("applied"):
            last = _read_json(self.folder / LAST)
            mismatch = [p for p in now if p in last and last[p] != now[p]]
        if mismatch:
            raise failed(
                f"{', '.join(sorted(mismatch))} was edited outside smart-tui since "
                "the root helper's last change; it will not write over that edit"
            )

    def busy(self, run_id: str) -> None:
        """Mark the run's files as being changed by this process."""
        folder = self.begun(run_id)
        me = psutil.Process()
        left = _read_json(folder / LEFT)
        _write_json(folder / LEFT, {**left, "busy": [me.pid, me.create_time()]})

    def changed(
        self,
        run_id: str,
        before: dict[str, str | None],
        paths: list[Path],
        *,
        applied: bool,
    ) -> None:
        """Record what the helper left after a script or a restore. ``LAST`` takes
        only files the action really changed: a no-op must not make a hand edit
        look like the helper's own."""
        folder = self.begun(run_id)
        was = _read_json(folder / LEFT)
        now = digests(paths)
        self._left(folder, now, applied=applied or bool(was.get("applied")))
        moved = {path: digest for path, digest in now.items() if before[path] != digest}
        if moved:
            _write_json(self.folder / LAST, {**_read_json(self.folder / LAST), **moved})

    def snapshot(self, run_id: str) -> Snapshot:
        return Snapshot.load(self.begun(run_id))

    def applied(self, run_id: str) -> bool:
        return bool(_read_json(self.begun(run_id) / LEFT).get("applied"))

    def _left(
        self, folder: Path, files: dict[str, str | None], *, applied: bool
    ) -> None:
        _write_json(folder / LEFT, {"busy": None, "applied": applied, "files": files})


def _alive(pid: object, started: object = None) -> bool:
    """Whether the process that marked a change busy still exists (the same one:
    a pid reused since has another start time)."""
    if not isinstance(pid, int):
        return False
    try:
        process = psutil.Process(pid)
        same = process.create_time() == started
        return bool(same and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
