"""The experiment queue: what the next ``--run-once`` runs, kept in the database.

Items run in ``position`` order once due (``not_before`` passed); ``take_next_due``
removes the item it returns, inside one write transaction, so two processes never
take the same item. ``recheck_due`` names a kept change old enough to be re-tested.
Pure queries over ``Store.db``; the CLI and the app call the same functions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from smart_tui.errors import ExitCode, SmartError
from smart_tui.storage import Store, utc_now

_COLUMNS = "id, position, experiment_id, added_at, not_before, reason"


class QueueError(SmartError):
    exit_code = ExitCode.USAGE
    title = "queue"


@dataclass(frozen=True)
class QueueItem:
    """One waiting experiment."""

    id: int
    position: int
    experiment_id: str
    added_at: str
    not_before: str  # UTC ISO 8601; empty = due at once
    reason: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> QueueItem:
        return cls(
            id=int(row["id"]),
            position=int(row["position"]),
            experiment_id=str(row["experiment_id"]),
            added_at=str(row["added_at"]),
            not_before=str(row["not_before"] or ""),
            reason=str(row["reason"] or ""),
        )

    def due(self, now: str) -> bool:
        return not self.not_before or self.not_before <= now


@dataclass(frozen=True)
class RecheckDue:
    """A kept change whose last run is older than RECHECK_DAYS."""

    experiment_id: str
    kept_variant: str
    kept_at: str


def normalise_time(text: str) -> str:
    """An ISO 8601 time as the store writes it (UTC, seconds); naive means UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueueError(
            f"{text!r} is not an ISO 8601 time; e.g. 2024-05-01T03:00 (UTC) or "
            "2024-05-01T05:00+02:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _rows(store: Store, sql: str, params: Iterable[Any] = ()) -> list[QueueItem]:
    cursor = store.db.execute(sql, list(params))
    names = [column[0] for column in cursor.description]
    return [QueueItem.from_row(dict(zip(names, row, strict=True))) for row in cursor]


def items(store: Store) -> list[QueueItem]:
    """Every waiting item, in the order they will run."""
    return _rows(store, f"select {_COLUMNS} from queue order by position, id")


def add(
    store: Store, experiment_id: str, *, not_before: str = "", reason: str = "manual"
) -> QueueItem:
    """Append ``experiment_id`` to the end of the queue; the caller checks it exists."""
    with store.db.conn:
        row = store.db.execute("select coalesce(max(position), 0) from queue")
        position = int(row.fetchone()[0]) + 1
        cursor = store.db.execute(
            "insert into queue (position, experiment_id, added_at, not_before, "
            "reason) values (?, ?, ?, ?, ?)",
            [position, experiment_id, utc_now(), not_before, reason],
        )
    item_id = int(cursor.lastrowid or 0)
    return _rows(store, f"select {_COLUMNS} from queue where id = ?", [item_id])[0]


def remove(store: Store, item_id: int) -> QueueItem:
    """Take item ``item_id`` out of the queue (as `queue list` numbers it)."""
    with store.db.conn:
        found = _rows(store, f"select {_COLUMNS} from queue where id = ?", [item_id])
        if not found:
            raise QueueError(
                f"no queue item {item_id}; `smart-tui queue list` shows the items"
            )
        store.db.execute("delete from queue where id = ?", [item_id])
    return found[0]


def clear(store: Store) -> int:
    """Empty the queue; returns how many items were removed."""
    with store.db.conn:
        cursor = store.db.execute("delete from queue")
    return int(cursor.rowcount)


def take_next_due(store: Store, now: str | None = None) -> QueueItem | None:
    """Remove and return the first item that is due, or None."""
    moment = now or utc_now()
    # One immediate transaction: a second process waits, then sees the item gone.
    with store.db.conn:
        found = _rows(
            store,
            f"select {_COLUMNS} from queue where coalesce(not_before, '') = '' "
            "or not_before <= ? order by position, id limit 1",
            [moment],
        )
        if found:
            store.db.execute("delete from queue where id = ?", [found[0].id])
    return found[0] if found else None


def recheck_cutoff(recheck_days: float, now: str | None = None) -> str | None:
    """The time before which a kept change is due again; None when rechecks are off."""
    if recheck_days <= 0:
        return None
    moment = datetime.fromisoformat(now) if now else datetime.now(UTC)
    return (moment - timedelta(days=recheck_days)).isoformat(timespec="seconds")


def recheck_due(
    store: Store,
    experiment_ids: Iterable[str],
    recheck_days: float,
    now: str | None = None,
) -> RecheckDue | None:
    """The kept change tested longest ago, if older than ``recheck_days``.

    Only an experiment whose latest run ended in KEEP counts: a later run (of any
    outcome) is the newer evidence, so a recheck that reverts ends the cycle."""
    cutoff = recheck_cutoff(recheck_days, now)
    wanted = sorted(set(experiment_ids))
    if cutoff is None or not wanted:
        return None
    marks = ", ".join("?" for _ in wanted)
    cursor = store.db.execute(
        "select r.experiment_id, r.kept_variant, r.finished_at from runs r "
        f"where r.experiment_id in ({marks}) and r.outcome = 'KEEP' "
        "and r.finished_at is not null and r.finished_at < ? "
        "and r.started_at = (select max(l.started_at) from runs l "
        "where l.experiment_id = r.experiment_id) "
        "order by r.finished_at, r.experiment_id limit 1",
        [*wanted, cutoff],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return RecheckDue(experiment_id=row[0], kept_variant=row[1] or "", kept_at=row[2])
