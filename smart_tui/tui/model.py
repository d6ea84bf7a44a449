"""What the screens show, computed from the core: experiment rows with their status,
decision rows with filters, a run's full record. Plain functions over ``Store`` and
``discover`` results, so screens only lay them out and tests need no Textual."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smart_tui.approvals import PENDING
from smart_tui.experiments import BrokenExperiment, Experiment
from smart_tui.storage import RunRow, Store

if TYPE_CHECKING:
    from smart_tui.coach.records import StoredAdvice

# The words shown for a status; never colour alone (NO_COLOR, screen readers).
IDLE, QUEUED, RUNNING, PENDING_APPROVAL, BROKEN = (
    "idle",
    "queued",
    "running",
    "pending",
    "broken",
)
# Enough history for a screen; older runs stay in the database and the dashboard.
DECISION_ROWS_LIMIT = 500
LOG_TAIL_LINES = 200


@dataclass(frozen=True)
class ExperimentRow:
    id: str
    description: str
    variants: str
    status: str
    last_outcome: str
    last_when: str
    error: str = ""
    # The error without the experiment's own folder in front: fits a table cell.
    error_brief: str = ""


@dataclass(frozen=True)
class DecisionRow:
    run_id: str
    experiment_id: str
    started_at: str
    status: str
    outcome: str
    kept_variant: str
    trigger: str
    decisions: str


@dataclass
class RunRecord:
    """Everything the run detail shows."""

    run: RunRow
    decisions: list[dict[str, Any]] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    advice: StoredAdvice | None = None


def _query(
    store: Store, sql: str, params: list[Any] | None = None
) -> list[dict[str, Any]]:
    cursor = store.db.execute(sql, params or [])
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def latest_runs(store: Store) -> dict[str, dict[str, Any]]:
    """The newest run of each experiment, in one indexed query."""
    rows = _query(
        store,
        "select r.experiment_id, r.started_at, r.finished_at, r.status, r.outcome "
        "from runs r join (select experiment_id, max(started_at) as newest from runs "
        "group by experiment_id) n on n.experiment_id = r.experiment_id "
        "and n.newest = r.started_at",
    )
    return {row["experiment_id"]: row for row in rows}


def experiments_with(store: Store, acted: str) -> set[str]:
    rows = _query(
        store,
        "select distinct r.experiment_id from decisions d join runs r "
        "on r.id = d.run_id where d.acted = ?",
        [acted],
    )
    return {row["experiment_id"] for row in rows}


def running_runs(store: Store) -> list[RunRow]:
    """Runs the database says are in progress (this app's or the timer's)."""
    rows = _query(
        store, "select * from runs where status = 'running' order by started_at desc"
    )
    return [RunRow.from_row(row) for row in rows]


def experiment_rows(
    entries: list[Experiment | BrokenExperiment],
    store: Store,
    *,
    queued: frozenset[str] = frozenset(),
) -> list[ExperimentRow]:
    latest = latest_runs(store)
    pending = experiments_with(store, PENDING)
    rows = []
    for entry in entries:
        last = latest.get(entry.id)
        outcome = (last["outcome"] or last["status"]) if last else "never run"
        when = (last["finished_at"] or last["started_at"]) if last else ""
        if isinstance(entry, BrokenExperiment):
            brief = entry.error.removeprefix(f"{entry.path}/")
            rows.append(
                ExperimentRow(
                    entry.id, "", "", BROKEN, outcome, when, entry.error, brief
                )
            )
            continue
        if last and last["status"] == "running":
            status = RUNNING
        elif entry.id in pending:
            status = PENDING_APPROVAL
        elif entry.id in queued:
            status = QUEUED
        else:
            status = IDLE
        variants = ", ".join(variant.name for variant in entry.meta.variants)
        rows.append(
            ExperimentRow(
                entry.id, entry.meta.description, variants, status, outcome, when
            )
        )
    return rows


def decision_rows(
    store: Store,
    *,
    experiment_id: str | None = None,
    outcome: str | None = None,
    newest_first: bool = True,
    limit: int = DECISION_ROWS_LIMIT,
) -> list[DecisionRow]:
    where, params = [], []
    if experiment_id:
        where.append("experiment_id = ?")
        params.append(experiment_id)
    if outcome:
        where.append("coalesce(outcome, status) = ?")
        params.append(outcome)
    order = "desc" if newest_first else "asc"

    # The page of runs first, then only their decisions: grouping decisions over
    # every run before the limit took 50 ms with 10,000 runs, this takes 5.
    runs = _query(
        store,
        "select id, experiment_id, started_at, status, outcome, kept_variant, "
        "trigger from runs "
        + (f"where {' and '.join(where)} " if where else "")
        + f"order by started_at {order}, rowid {order} limit ?",
        [*params, limit],
    )
    decided: dict[str, list[str]] = {row["id"]: [] for row in runs}
    if decided:
        marks = ", ".join("?" for _ in decided)
        for row in _query(
            store,
            "select run_id, variant, decision, acted from decisions "
            f"where run_id in ({marks}) order by id",
            list(decided),
        ):
            decided[row["run_id"]].append(
                f"{row['variant']} {row['decision']} ({row['acted']})"
            )
    return [
        DecisionRow(
            run_id=row["id"],
            experiment_id=row["experiment_id"],
            started_at=row["started_at"],
            status=row["status"],
            outcome=row["outcome"] or row["status"],
            kept_variant=row["kept_variant"] or "-",
            trigger=row["trigger"] or "-",
            decisions="; ".join(decided[row["id"]]),
        )
        for row in runs
    ]


def outcomes(store: Store) -> list[str]:
    rows = _query(
        store,
        "select distinct coalesce(outcome, status) as shown from runs order by shown",
    )
    return [row["shown"] for row in rows if row["shown"]]


def experiment_ids(store: Store) -> list[str]:
    rows = _query(store, "select distinct experiment_id from runs order by 1")
    return [row["experiment_id"] for row in rows]


def _tail(path: Path, lines: int) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def advice_by_run(store: Store, run_ids: Iterable[str]) -> dict[str, StoredAdvice]:
    """run id -> the latest advice its coach gave, for the runs that asked."""
    # Imported here: the coach package loads httpx (~100 ms), which the first
    # screen does not need.
    from smart_tui.coach.records import advice_for_runs

    return advice_for_runs(store, run_ids)


def run_record(store: Store, var_path: Path, run_id: str) -> RunRecord | None:
    run = store.run(run_id)
    if run is None:
        return None
    return RunRecord(
        run=run,
        decisions=store.decisions(run_id),
        windows=store.windows(run_id),
        phases=store.phases(run_id),
        log_tail=_tail(var_path / "runs" / run_id / "run.log", LOG_TAIL_LINES),
        advice=advice_by_run(store, [run_id]).get(run_id),
    )


def folder_signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when an experiment is added, removed or its meta.json edited:
    each entry's name, its change time and its meta.json's (writes, renames and
    chmod all move a ctime). Two stats per experiment instead of parsing and
    validating every meta.json."""
    try:
        entries = sorted(os.scandir(path), key=lambda entry: entry.name)
    except OSError:
        return ()
    return tuple(
        (
            entry.name,
            _ctime_ns(entry.path),
            _ctime_ns(os.path.join(entry.path, "meta.json")),
        )
        for entry in entries
    )


def _ctime_ns(path: str) -> int:
    try:
        return os.stat(path).st_ctime_ns
    except OSError:
        return 0


def scripts_of(experiment: Experiment) -> dict[str, str]:
    """The experiment folder's files (but meta.json), name -> text, for the detail."""
    found = {}
    for path in sorted(experiment.path.iterdir()):
        if path.is_file() and path.name != "meta.json":
            try:
                found[path.name] = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                found[path.name] = f"(cannot read: {exc.strerror})"
    return found
