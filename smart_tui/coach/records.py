"""Advice kept in the run database (the ``advice`` table) and read back for the app,
the dashboard and the approvals screen: the latest row per run, answered or not."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from smart_tui.storage import Store, utc_now

Status = Literal["ok", "rejected", "failed"]


@dataclass(frozen=True)
class StoredAdvice:
    """One time a run asked its coach. ``advice`` is empty unless status is ok;
    ``reason`` says why it was rejected or failed."""

    run_id: str
    asked_at: str
    source: str
    status: str
    advice: str
    variant: str
    note: str
    reason: str
    recommendation: str
    elapsed_ms: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StoredAdvice:
        return cls(
            **{name: row[name] or _EMPTY[name] for name in cls.__dataclass_fields__}
        )

    def summary(self) -> str:
        """One line for a table cell or a notification."""
        if self.status != "ok":
            return f"coach {self.status}: {self.reason}"
        variant = f" {self.variant}" if self.variant else ""
        note = f": {self.note}" if self.note else ""
        return f"coach: {self.advice}{variant}{note}"


_EMPTY: dict[str, Any] = {
    name: 0 if name == "elapsed_ms" else ""
    for name in StoredAdvice.__dataclass_fields__
}


def save_advice(store: Store, advice: StoredAdvice) -> None:
    with store.db.conn:
        store.db.table("advice").insert(
            {name: getattr(advice, name) for name in StoredAdvice.__dataclass_fields__}
        )


def new_advice(
    run_id: str,
    *,
    source: str,
    status: Status,
    advice: str = "",
    variant: str | None = None,
    note: str = "",
    reason: str = "",
    recommendation: str = "none",
    elapsed_s: float = 0.0,
) -> StoredAdvice:
    return StoredAdvice(
        run_id=run_id,
        asked_at=utc_now(),
        source=source,
        status=status,
        advice=advice,
        variant=variant or "",
        note=note,
        reason=reason,
        recommendation=recommendation,
        elapsed_ms=round(elapsed_s * 1000),
    )


def advice_for_run(store: Store, run_id: str) -> StoredAdvice | None:
    """The latest advice a run received, or None if it never asked."""
    return advice_for_runs(store, [run_id]).get(run_id)


def advice_for_runs(store: Store, run_ids: Iterable[str]) -> dict[str, StoredAdvice]:
    """run id -> its latest advice, for the runs that asked."""
    wanted = list(dict.fromkeys(run_ids))
    if not wanted:
        return {}
    marks = ", ".join("?" for _ in wanted)
    rows = store.db.table("advice").rows_where(
        f"run_id in ({marks})", wanted, order_by="id"
    )
    return {row["run_id"]: StoredAdvice.from_row(row) for row in rows}
