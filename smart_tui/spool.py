"""Records a run could not write to the database, kept until the next start.

``record`` is how the runner writes what must survive a database failure (how the
run ended, the revert, its events): it writes to the store, and when that fails it
appends the write to ``var/spool/<run_id>.json`` (fsynced) instead of failing the
run. ``import_pending`` replays spooled writes under the run lock at the next start."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smart_tui.errors import LockHeld
from smart_tui.lock import RunLock
from smart_tui.storage import StorageError, Store, utc_now

log = logging.getLogger("smart_tui.spool")

SPOOL_DIR = "spool"


def write(store: Store, kind: str, fields: dict[str, Any]) -> None:
    """Perform one recorded write; the same call at run time and at import."""
    if kind == "finish":
        if store.run(fields["run_id"]) is None:
            # The run died before its row was written: create it.
            store.record_aborted(
                fields["run_id"], fields["experiment_id"], fields.get("error") or ""
            )
        store.finish_run(
            fields["run_id"],
            status=fields["status"],
            outcome=fields["outcome"],
            kept_variant=fields.get("kept_variant"),
            error=fields.get("error"),
        )
    elif kind == "phase":
        store.record_phase(
            fields["run_id"],
            fields["name"],
            fields.get("variant"),
            fields["status"],
            fields.get("detail", ""),
        )
    elif kind == "event":
        store.add_event(
            fields["kind"],
            fields["message"],
            run_id=fields.get("run_id"),
            level=fields.get("level", "info"),
        )
    else:
        raise ValueError(f"unknown spooled write {kind!r}")


def spool_path(var_dir: Path, run_id: str) -> Path:
    return var_dir / SPOOL_DIR / f"{run_id}.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def record(
    store: Store,
    var_dir: Path,
    run_id: str,
    kind: str,
    fields: dict[str, Any],
) -> bool:
    """Write to the database, or spool the write when that fails; returns whether
    it reached the database. A spool that cannot be written either is logged: the
    run's safety work goes on regardless."""
    try:
        write(store, kind, fields)
        return True
    except (sqlite3.Error, StorageError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    path = spool_path(var_dir, run_id)
    try:
        data: dict[str, Any] = _read(path) if path.exists() else {"run_id": run_id}
        writes: list[dict[str, Any]] = data.get("writes", [])
        writes.append(
            {"kind": kind, "fields": fields, "at": utc_now(), "error": problem}
        )
        _write_json(path, {**data, "writes": writes})
    except (OSError, ValueError) as exc:
        log.error(
            "could not record %s of run %s in %s (%s) nor spool it to %s: %s",
            kind,
            run_id,
            store.path,
            problem,
            path,
            exc,
        )
        return False
    log.error(
        "could not record %s of run %s in %s (%s); spooled to %s",
        kind,
        run_id,
        store.path,
        problem,
        path,
    )
    return False


@dataclass(frozen=True)
class Imported:
    """One spool file replayed into the database."""

    run_id: str
    writes: int
    path: Path
    first_error: str

    def describe(self) -> str:
        return (
            f"imported {self.writes} spooled write(s) of run {self.run_id} from "
            f"{self.path} (the database had failed: {self.first_error})"
        )


def pending(var_dir: Path) -> list[Path]:
    folder = var_dir / SPOOL_DIR
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def import_locked(var_dir: Path, store: Store) -> list[Imported]:
    """Replay every spool file; the caller holds the run lock. A write that fails
    again stops that file's import and leaves the rest of it for the next start."""
    done: list[Imported] = []
    for path in pending(var_dir):
        try:
            data = _read(path)
        except (OSError, ValueError) as exc:
            log.error("spool file %s is unreadable (%s); left in place", path, exc)
            continue
        writes: list[dict[str, Any]] = data.get("writes", [])
        imported = 0
        first_error = writes[0]["error"] if writes else "unknown"
        result = Imported(data["run_id"], len(writes), path, first_error)
        try:
            for item in writes:
                write(store, item["kind"], item["fields"])
                imported += 1
            store.add_event("spool-imported", result.describe(), run_id=result.run_id)
        except (sqlite3.Error, StorageError) as exc:
            _write_json(path, {**data, "writes": writes[imported:]})
            log.warning("spool %s not imported yet: %s", path, exc)
            continue
        path.unlink()
        done.append(result)
    return done


def import_pending(var_dir: Path, db_path: Path) -> list[Imported]:
    """Import spooled writes if there are any and no run is in progress (a live
    run may still be appending to its own spool file)."""
    if not pending(var_dir):
        return []
    try:
        with RunLock(var_dir / "run.lock", "smart-tui spool import"):
            store = Store(db_path)
            try:
                return import_locked(var_dir, store)
            finally:
                store.close()
    except LockHeld:
        return []
    except StorageError as exc:
        log.warning("spooled results stay in %s: %s", var_dir / SPOOL_DIR, exc)
        return []
