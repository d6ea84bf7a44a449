"""The durable journal of the run in progress, and recovery from a run that died.

Before a run changes anything it writes ``var/journal.json`` (fsynced, with the folder
entry) naming the run and its byte snapshot. A run that ends, however it ends,
removes the journal; so a journal found while nobody holds the run lock belongs to a
process that was killed, and ``recover`` puts the snapshot back, tests and reloads
nginx, and records the run as ABORTED."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from smart_tui.errors import RevertFailed, SmartError
from smart_tui.hands import Hands
from smart_tui.lock import RunLock
from smart_tui.scripts import Nginx
from smart_tui.snapshot import Snapshot
from smart_tui.storage import Store

log = logging.getLogger("smart_tui.journal")

JOURNAL_NAME = "journal.json"


@dataclass(frozen=True)
class JournalEntry:
    """What a recovery needs to know about the run in progress."""

    run_id: str
    experiment_id: str
    pid: int
    snapshot_dir: Path
    nginx_conf: Path
    nginx_command: list[str]
    # ROOT_HELPER_CMD's words when the run changed files through the root helper.
    helper: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "experiment_id": self.experiment_id,
                "pid": self.pid,
                "snapshot_dir": str(self.snapshot_dir),
                "nginx_conf": str(self.nginx_conf),
                "nginx_command": self.nginx_command,
                "helper": self.helper,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> JournalEntry:
        raw = json.loads(text)
        return cls(
            run_id=raw["run_id"],
            experiment_id=raw["experiment_id"],
            pid=int(raw["pid"]),
            snapshot_dir=Path(raw["snapshot_dir"]),
            nginx_conf=Path(raw["nginx_conf"]),
            nginx_command=list(raw["nginx_command"]),
            helper=list(raw.get("helper", [])),
        )


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """``var/journal.json``: written before the first change, removed at the end."""

    def __init__(self, var_dir: Path) -> None:
        self.path = var_dir / JOURNAL_NAME

    def write(self, entry: JournalEntry) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(".tmp")
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(entry.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        # The rename itself must survive a power cut, not only the bytes.
        _fsync_dir(self.path.parent)

    def read(self) -> JournalEntry | None:
        try:
            return JournalEntry.from_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise SmartError(
                f"{self.path} is unreadable ({exc}); restore the nginx config by "
                "hand from var/runs/<run_id>/snapshot, then delete the journal"
            ) from None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)


@dataclass(frozen=True)
class Recovery:
    """What ``recover`` found and did."""

    run_id: str
    experiment_id: str
    restored: list[Path]

    def describe(self) -> str:
        files = ", ".join(str(path) for path in self.restored) or "no file differed"
        return (
            f"recovered run {self.run_id} of {self.experiment_id} "
            f"(its process died): restored {files}; nginx tested and reloaded"
        )


def recover_locked(var_dir: Path, store: Store | None) -> Recovery | None:
    """Recover an unfinished run; the caller holds the run lock."""
    journal = Journal(var_dir)
    entry = journal.read()
    if entry is None:
        return None
    run = store.run(entry.run_id) if store is not None else None
    if run is not None and run.status != "running":
        # The run was recorded as ended just before its process died: whatever is
        # live (baseline or a kept variant) is what it decided.
        journal.clear()
        return None

    snapshot = Snapshot.load(entry.snapshot_dir)
    helper = tuple(entry.helper)
    restored = Hands(helper).restore(snapshot, entry.run_id)
    nginx = Nginx(conf=entry.nginx_conf, command=entry.nginx_command, helper=helper)
    test = nginx.test()
    if not test.ok:
        raise RevertFailed(
            f"recovering run {entry.run_id}: the restored config fails `nginx -t`: "
            f"{test.describe()}; fix {entry.nginx_conf} by hand"
        )
    reload = nginx.reload()
    if not reload.ok:
        # nginx may simply not be running (a reboot): it will start on the baseline.
        log.warning("recovery reload: %s", reload.describe())

    recovery = Recovery(entry.run_id, entry.experiment_id, restored)
    if store is not None:
        store.record_aborted(
            entry.run_id,
            entry.experiment_id,
            "the run's process died; recovered to the snapshot on next start",
        )
        store.add_event("recovered", recovery.describe(), run_id=entry.run_id)
    journal.clear()
    log.warning("%s", recovery.describe())
    return recovery


def recover(var_dir: Path, db_path: Path) -> Recovery | None:
    """Take the run lock and recover an unfinished run, if there is one. Does
    nothing (and returns None) while another process holds the lock: its run is
    alive."""
    if not (var_dir / JOURNAL_NAME).exists():
        return None
    with RunLock(var_dir / "run.lock", "smart-tui recover"):
        store = Store(db_path)
        try:
            return recover_locked(var_dir, store)
        finally:
            store.close()
