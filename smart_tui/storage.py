"""The run record: one sqlite file (WAL) holding runs, phases, measurement windows,
per-second figures, decisions and events.

``Store`` owns the schema and its migrations (``PRAGMA user_version``) and is safe to
open from two processes at once: a busy timeout and immediate write transactions make
the timer's writes and the app's reads wait instead of failing."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import sqlite_utils

from smart_tui.errors import ExitCode, SmartError

BUSY_TIMEOUT_S = 15.0


class StorageError(SmartError):
    exit_code = ExitCode.DATABASE_FAILED
    title = "database"


def utc_now() -> str:
    """An ISO 8601 UTC timestamp with seconds, as stored everywhere."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _v1(db: sqlite_utils.Database) -> None:
    db.table("runs").create(
        {
            "id": str,
            "experiment_id": str,
            "started_at": str,
            "finished_at": str,
            "status": str,  # running, done, aborted, failed
            "outcome": str,  # KEEP, REVERT, INCONCLUSIVE, APPLY_FAILED, ABORTED...
            "kept_variant": str,
            "error": str,
            "trigger": str,
            "pid": int,
            "host": str,
            "settings": str,
        },
        pk="id",
    )
    db.table("runs").create_index(["experiment_id", "started_at"])
    db.table("phases").create(
        {
            "id": int,
            "run_id": str,
            "name": str,
            "variant": str,
            "started_at": str,
            "finished_at": str,
            "status": str,
            "detail": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("windows").create(
        {
            "id": int,
            "run_id": str,
            "variant": str,
            "role": str,  # baseline or variant
            "started_at": str,
            "summary": str,  # JSON: requests, p50_ms ... intended/achieved rps
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("seconds").create(
        {
            "window_id": int,
            "second": int,
            "stats": str,  # JSON of the probe's per-second figures
            "hdr": str,  # encoded HDR histogram of that second's latencies
        },
        pk=("window_id", "second"),
        foreign_keys=[("window_id", "windows", "id")],
    )
    db.table("samples").create(
        {
            "window_id": int,
            "encoding": str,
            "data": bytes,
        },
        pk="window_id",
        foreign_keys=[("window_id", "windows", "id")],
    )
    db.table("decisions").create(
        {
            "id": int,
            "run_id": str,
            "variant": str,
            "decision": str,
            "policy": str,
            "decided_at": str,
            "reasons": str,  # JSON list of sentences
            "details": str,  # JSON of the decision's numbers
            "acted": str,  # kept, reverted, pending...
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("events").create(
        {
            "id": int,
            "at": str,
            "run_id": str,
            "level": str,
            "kind": str,
            "message": str,
        },
        pk="id",
    )
    db.table("events").create_index(["run_id"])


def _v2_queue(db: sqlite_utils.Database) -> None:
    # The experiments waiting to run, in `position` order; `not_before` (UTC ISO,
    # empty = at once) lets an item wait. A run takes its item out, so the queue
    # never holds finished work: history is the runs table.
    db.table("queue").create(
        {
            "id": int,
            "position": int,
            "experiment_id": str,
            "added_at": str,
            "not_before": str,
            "reason": str,  # manual, app...
        },
        pk="id",
    )
    db.table("queue").create_index(["position"])


def _v3_advice(db: sqlite_utils.Database) -> None:
    # One row per time a finished run asked its coach, answered or not; the
    # app and dashboard show it beside the run's (possibly pending) decision.
    db.table("advice").create(
        {
            "id": int,
            "run_id": str,
            "asked_at": str,
            "source": str,  # api, ollama, openai
            "status": str,  # ok, rejected, failed
            "advice": str,  # agree, keep, revert, extend, rerun_later, try_variant
            "variant": str,
            "note": str,
            "reason": str,  # why rejected or failed, secrets scrubbed
            "recommendation": str,  # none, rerun, extend (COACH_MODE=act)
            "elapsed_ms": int,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("advice").create_index(["run_id"])


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1,
    _v2_queue,
    _v3_advice,
]


@dataclass(frozen=True)
class RunRow:
    """A run as listed in the history."""

    id: str
    experiment_id: str
    started_at: str
    finished_at: str | None
    status: str
    outcome: str | None
    kept_variant: str | None
    error: str | None
    trigger: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunRow:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class Store:
    """The sqlite record of every run. Open one per process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level="IMMEDIATE"
            )
            self.db = sqlite_utils.Database(conn)
            self.db.enable_wal()
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(
                f"cannot open the database {path}: {exc}; check DB_PATH in smart.conf "
                "and that this user may write the file and its folder"
            ) from None

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        for number, migration in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            with self.db.conn:
                migration(self.db)
                self.db.execute(f"PRAGMA user_version = {number}")

    def require_writable(self) -> None:
        """Raise ``StorageError`` unless this process may write the database. A
        read-only file still opens (sqlite falls back to reading), so the check
        takes the write lock and rewrites the schema version, then rolls back."""
        version = self.schema_version
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(f"PRAGMA user_version = {version}")
        except sqlite3.Error as exc:
            raise StorageError(
                f"cannot write the database {self.path} ({exc}); nothing was "
                "changed; make the file and its folder writable by this user"
            ) from None
        finally:
            self.db.conn.rollback()

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self.db.close()

    # Runs

    def start_run(
        self,
        run_id: str,
        experiment_id: str,
        *,
        trigger: str,
        pid: int,
        host: str,
        settings: Mapping[str, Any],
    ) -> None:
        with self.db.conn:
            self.db.table("runs").insert(
                {
                    "id": run_id,
                    "experiment_id": experiment_id,
                    "started_at": utc_now(),
                    "status": "running",
                    "trigger": trigger,
                    "pid": pid,
                    "host": host,
                    "settings": _dumps(settings),
                }
            )

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        outcome: str | None,
        kept_variant: str | None = None,
        error: str | None = None,
    ) -> None:
        with self.db.conn:
            self.db.table("runs").update(
                run_id,
                {
                    "finished_at": utc_now(),
                    "status": status,
                    "outcome": outcome,
                    "kept_variant": kept_variant,
                    "error": error,
                },
            )

    def record_aborted(self, run_id: str, experiment_id: str, error: str) -> None:
        """Mark a run ABORTED, creating its row if it died before writing one."""
        with self.db.conn:
            self.db.table("runs").upsert(
                {
                    "id": run_id,
                    "experiment_id": experiment_id,
                    "finished_at": utc_now(),
                    "status": "aborted",
                    "outcome": "ABORTED",
                    "error": error,
                },
                pk="id",
            )
            self.db.execute(
                "update runs set started_at = coalesce(started_at, finished_at) "
                "where id = ?",
                [run_id],
            )

    def runs(self, limit: int = 50, experiment_id: str | None = None) -> list[RunRow]:
        where = "experiment_id = ?" if experiment_id else None
        params = [experiment_id] if experiment_id else None
        rows = self.db.table("runs").rows_where(
            where, params, order_by="started_at desc, rowid desc", limit=limit
        )
        return [RunRow.from_row(row) for row in rows]

    def run(self, run_id: str) -> RunRow | None:
        for row in self.db.table("runs").rows_where("id = ?", [run_id]):
            return RunRow.from_row(row)
        return None

    # Phases

    def start_phase(self, run_id: str, name: str, variant: str | None) -> int:
        with self.db.conn:
            table = self.db.table("phases").insert(
                {
                    "run_id": run_id,
                    "name": name,
                    "variant": variant,
                    "started_at": utc_now(),
                    "status": "running",
                }
            )
        return int(cast(int, table.last_pk))

    def finish_phase(self, phase_id: int, status: str, detail: str = "") -> None:
        with self.db.conn:
            self.db.table("phases").update(
                phase_id,
                {"finished_at": utc_now(), "status": status, "detail": detail},
            )

    def record_phase(
        self, run_id: str, name: str, variant: str | None, status: str, detail: str
    ) -> None:
        """Record a phase that already happened (start and end now)."""
        self.finish_phase(self.start_phase(run_id, name, variant), status, detail)

    def phases(self, run_id: str) -> list[dict[str, Any]]:
        return list(
            self.db.table("phases").rows_where("run_id = ?", [run_id], order_by="id")
        )

    # Measurements

    def open_window(self, run_id: str, variant: str, role: str) -> int:
        """Start a measured window; its seconds arrive one by one, so another
        process (the app) can follow a run live from the database."""
        with self.db.conn:
            table = self.db.table("windows").insert(
                {
                    "run_id": run_id,
                    "variant": variant,
                    "role": role,
                    "started_at": utc_now(),
                    "summary": "{}",
                }
            )
        return int(cast(int, table.last_pk))

    def add_seconds(
        self,
        window_id: int,
        seconds: Iterable[tuple[int, Mapping[str, Any], str | None]],
    ) -> None:
        """Store per-second figures and their encoded HDR histograms."""
        with self.db.conn:
            self.db.table("seconds").insert_all(
                (
                    {
                        "window_id": window_id,
                        "second": second,
                        "stats": _dumps(stats),
                        "hdr": hdr,
                    }
                    for second, stats, hdr in seconds
                ),
                replace=True,
            )

    def close_window(
        self,
        window_id: int,
        summary: Mapping[str, Any],
        samples: tuple[str, bytes] | None = None,
    ) -> None:
        """Finish a window with its summary and the raw samples the decision used
        (``(encoding, data)``)."""
        with self.db.conn:
            self.db.table("windows").update(window_id, {"summary": _dumps(summary)})
            if samples is not None:
                encoding, data = samples
                self.db.table("samples").insert(
                    {"window_id": window_id, "encoding": encoding, "data": data},
                    replace=True,
                )

    def add_window(
        self,
        run_id: str,
        variant: str,
        role: str,
        summary: Mapping[str, Any],
        seconds: Iterable[tuple[int, Mapping[str, Any], str | None]],
        samples: tuple[str, bytes] | None = None,
    ) -> int:
        """Store a whole window at once (imports and tests)."""
        window_id = self.open_window(run_id, variant, role)
        self.add_seconds(window_id, seconds)
        self.close_window(window_id, summary, samples)
        return window_id

    def windows(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.db.table("windows").rows_where(
            "run_id = ?", [run_id], order_by="id"
        )
        return [{**row, "summary": json.loads(row["summary"])} for row in rows]

    def seconds(self, window_id: int) -> list[dict[str, Any]]:
        rows = self.db.table("seconds").rows_where(
            "window_id = ?", [window_id], order_by="second"
        )
        return [{**json.loads(row["stats"]), "second": row["second"]} for row in rows]

    # Decisions and events

    def add_decision(
        self,
        run_id: str,
        variant: str,
        decision: str,
        *,
        policy: str,
        reasons: list[str],
        details: Mapping[str, Any],
        acted: str,
    ) -> int:
        with self.db.conn:
            table = self.db.table("decisions").insert(
                {
                    "run_id": run_id,
                    "variant": variant,
                    "decision": decision,
                    "policy": policy,
                    "decided_at": utc_now(),
                    "reasons": _dumps(reasons),
                    "details": _dumps(details),
                    "acted": acted,
                }
            )
        return int(cast(int, table.last_pk))

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.db.table("decisions").rows_where(
            "run_id = ?", [run_id], order_by="id"
        )
        return [
            {
                **row,
                "reasons": json.loads(row["reasons"]),
                "details": json.loads(row["details"]),
            }
            for row in rows
        ]

    def add_event(
        self, kind: str, message: str, *, run_id: str | None = None, level: str = "info"
    ) -> None:
        with self.db.conn:
            self.db.table("events").insert(
                {
                    "at": utc_now(),
                    "run_id": run_id,
                    "level": level,
                    "kind": kind,
                    "message": message,
                }
            )

    def events(
        self, run_id: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        where = "run_id = ?" if run_id else None
        params = [run_id] if run_id else None
        return list(
            self.db.table("events").rows_where(
                where, params, order_by="id desc", limit=limit
            )
        )
