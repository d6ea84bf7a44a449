"""Decisions waiting for a human when ``APPROVAL=manual``: list, approve, override,
expire. A pending decision leaves the server on baseline; approving a KEEP re-applies
the variant with the experiment's own apply command, proves a watched file changed,
checks ``nginx -t`` and reloads. Everything here is core: no Textual, no printing."""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from smart_tui import experiments
from smart_tui.errors import ApplyFailed, SmartError
from smart_tui.lock import RunLock
from smart_tui.settings import Settings
from smart_tui.snapshot import Snapshot
from smart_tui.storage import Store

if TYPE_CHECKING:
    from smart_tui.target import Target

log = logging.getLogger("smart_tui.approvals")

PENDING = "pending"
KEPT = "kept"
REVERTED = "reverted"
EXPIRED = "expired-reverted"
OVERRIDDEN_KEPT = "overridden-kept"
OVERRIDDEN_REVERTED = "overridden-reverted"
# Another variant of the same run was kept, so this one can no longer be live.
SUPERSEDED = "superseded"


class ApprovalError(SmartError):
    title = "approval"


@dataclass(frozen=True)
class PendingDecision:
    """One decision waiting for an answer."""

    id: int
    run_id: str
    experiment_id: str
    variant: str
    decision: str
    reasons: list[str]
    decided_at: str

    def age_s(self, now: datetime) -> float:
        return (now - datetime.fromisoformat(self.decided_at)).total_seconds()


def _from_row(row: Any) -> PendingDecision:
    return PendingDecision(
        id=int(row["id"]),
        run_id=row["run_id"],
        experiment_id=row["experiment_id"],
        variant=row["variant"],
        decision=row["decision"],
        reasons=list(json.loads(row["reasons"] or "[]")),
        decided_at=row["decided_at"],
    )


_SELECT = (
    "select d.id, d.run_id, r.experiment_id, d.variant, d.decision, d.reasons, "
    "d.decided_at, d.acted from decisions d join runs r on r.id = d.run_id "
)


def _rows(store: Store, where: str, params: list[Any]) -> list[Any]:
    cursor = store.db.execute(_SELECT + where, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def pending(store: Store) -> list[PendingDecision]:
    """Every pending decision, oldest first."""
    rows = _rows(store, "where d.acted = ? order by d.decided_at, d.id", [PENDING])
    return [_from_row(row) for row in rows]


def pending_count(store: Store) -> int:
    row = store.db.execute(
        "select count(*) from decisions where acted = ?", [PENDING]
    ).fetchone()
    return int(row[0])


def _get_pending(store: Store, decision_id: int) -> PendingDecision:
    rows = _rows(store, "where d.id = ?", [decision_id])
    if not rows:
        raise ApprovalError(f"no decision {decision_id}; refresh the list")
    if rows[0]["acted"] != PENDING:
        raise ApprovalError(
            f"decision {decision_id} is no longer pending (it was "
            f"{rows[0]['acted']}); nothing to do"
        )
    return _from_row(rows[0])


def _mark(store: Store, item: PendingDecision, acted: str, note: str) -> None:
    with store.db.conn:
        store.db.execute(
            "update decisions set acted = ? where id = ?", [acted, item.id]
        )
        if acted in (KEPT, OVERRIDDEN_KEPT):
            store.db.execute(
                "update decisions set acted = ? where run_id = ? and id != ? "
                "and acted = ?",
                [SUPERSEDED, item.run_id, item.id, PENDING],
            )
            store.db.execute(
                "update runs set kept_variant = ? where id = ?",
                [item.variant, item.run_id],
            )
        # The run's PENDING outcome becomes the answer once nothing waits any more.
        store.db.execute(
            "update runs set outcome = case when kept_variant is null then 'REVERT' "
            "else 'KEEP' end where id = ? and outcome = 'PENDING' and not exists "
            "(select 1 from decisions where run_id = ? and acted = ?)",
            [item.run_id, item.run_id, PENDING],
        )
    store.add_event(f"approval-{acted}", note, run_id=item.run_id)
    log.info("%s", note)


def _script_env(
    settings: Settings, target: Target, item: PendingDecision
) -> dict[str, str]:
    # The same variables the runner gives scripts (docs/architecture.md).
    return {
        "SMART_NGINX_CONF": str(target.nginx.conf),
        "SMART_NGINX": shlex.join(target.nginx.command),
        "SMART_TARGET_URL": target.url,
        "SMART_RUN_DIR": str(settings.var_path / "runs" / item.run_id),
        "SMART_VARIANT": item.variant,
        "SMART_RUN_ID": item.run_id,
    }


def _apply_variant(settings: Settings, item: PendingDecision) -> None:
    """Apply ``item``'s variant and prove it is live, or raise ``ApplyFailed``."""
    # The runner pulls in the statistics stack (scipy, ~1 s): only when applying.
    from smart_tui.target import resolve_target

    experiment = experiments.find(settings.experiments_path, item.experiment_id)
    variant = experiment.variant(item.variant)
    target = resolve_target(settings)
    before = Snapshot.take(experiment.watched(target.nginx.conf))
    hands = target.hands
    hands.begin(item.run_id, experiment)

    result = hands.script(
        experiment,
        variant,
        revert=False,
        run_id=item.run_id,
        env=_script_env(settings, target, item),
    )
    if not result.ok:
        hands.restore(before, item.run_id)
        raise ApplyFailed(
            f"{item.experiment_id}: applying {item.variant!r} failed: "
            f"{result.describe()}; the files were restored, the server is on baseline"
        )
    if not before.changed():
        raise ApplyFailed(
            f"{item.experiment_id}: `{variant.apply}` exited 0 but changed no watched "
            "file; is the variant already live? check the config by hand"
        )

    # Prove the new config is valid before asking nginx to load it.
    test = target.nginx.test()
    reload = target.nginx.reload() if test.ok else None
    if reload is None or not reload.ok:
        failed = test if reload is None else reload
        hands.restore(before, item.run_id)
        target.nginx.reload()
        raise ApplyFailed(
            f"{item.experiment_id}: {item.variant!r} was applied but "
            f"{failed.describe()}; restored the baseline files"
        )


def approve(settings: Settings, store: Store, decision_id: int) -> str:
    """Carry out a pending decision; returns what was done, in one line.

    A KEEP applies the variant (under the host-wide run lock, so no run is changing
    nginx meanwhile); any other decision leaves the server on baseline."""
    item = _get_pending(store, decision_id)
    if item.decision != "KEEP":
        note = f"{item.run_id}: {item.decision} of {item.variant} approved; on baseline"
        _mark(store, item, REVERTED, note)
        return note
    with RunLock(settings.var_path / "run.lock", f"approving {item.run_id}"):
        _apply_variant(settings, item)
    note = f"{item.run_id}: KEEP of {item.variant} approved; the variant is live"
    _mark(store, item, KEPT, note)
    return note


def override(
    store: Store,
    decision_id: int,
    to: str,
    *,
    settings: Settings | None = None,
) -> str:
    """Answer a pending decision with the opposite: ``to`` is KEEP or REVERT.

    Overriding to REVERT only records the answer (the server is already on baseline).
    Overriding to KEEP applies the variant, so it needs ``settings``."""
    item = _get_pending(store, decision_id)
    wanted = to.upper()
    if wanted not in ("KEEP", "REVERT"):
        raise ApprovalError(f"override to {to!r}: expected KEEP or REVERT")
    if wanted == "REVERT":
        note = f"{item.run_id}: {item.decision} of {item.variant} overridden to REVERT"
        _mark(store, item, OVERRIDDEN_REVERTED, note)
        return note
    if settings is None:
        raise ApprovalError("overriding to KEEP applies the variant: pass settings")
    with RunLock(settings.var_path / "run.lock", f"overriding {item.run_id}"):
        _apply_variant(settings, item)
    note = f"{item.run_id}: {item.decision} of {item.variant} overridden to KEEP; live"
    _mark(store, item, OVERRIDDEN_KEPT, note)
    return note


def expire(store: Store, now: datetime, timeout_s: float) -> list[int]:
    """Turn decisions pending longer than ``timeout_s`` into REVERT; returns their
    ids. Nothing to undo: a pending decision never left baseline."""
    expired = [item for item in pending(store) if item.age_s(now) > timeout_s]
    for item in expired:
        note = (
            f"{item.run_id}: {item.decision} of {item.variant} expired after "
            f"{timeout_s:.0f} s without an answer; stays on baseline"
        )
        _mark(store, item, EXPIRED, note)
    return [item.id for item in expired]
