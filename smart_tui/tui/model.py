"""What the screens show, computed from the core: experiment rows with their status,
decision rows with filters, a run's full record. Plain functions over ``Store`` and
``discover`` results, so screens only lay them out and tests need no Textual."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smart_tui.approvals import PENDING
from smart_tui.experiments import BrokenExperiment, Experiment
from smart_tui.storage import RunRow, Store

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
            rows.append(
                ExperimentRow(entry.id, "", "", BROKEN, outcome, when, entry.error)
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
        where.append("r.experiment_id = ?")
        params.append(experiment_id)
    if outcome:
        where.append("coalesce(r.outcome, r.status) = ?")
        params.append(outcome)
    order = "desc" if newest_first else "asc"
    rows = _query(
        store,
        "select r.id, r.experiment_id, r.started_at, r.status, r.outcome, "
        "r.kept_variant, r.trigger, group_concat(d.variant || ' ' || d.decision "
        "|| ' (' || d.acted || ')', '; ') as decided from runs r left join "
        "decisions d on d.run_id = r.id "
        + (f"where {' and '.join(where)} " if where else "")
        + f"group by r.id order by r.started_at {order}, r.rowid {order} limit ?",
        [*params, limit],
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
            decisions=row["decided"] or "",
        )
        for row in rows
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
    )


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
