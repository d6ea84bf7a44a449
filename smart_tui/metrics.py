"""Prometheus metrics as a node_exporter textfile (``METRICS_PATH``; empty = off).

``write_textfile(settings, store)`` is called after each run. It describes the
latest finished run of every experiment (decision, baseline and variant p50/p99 and
5xx share, duration), the baseline trend flag and the queue length, and replaces
the file atomically so node_exporter never reads half of it."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from smart_tui import trends
from smart_tui.atomic import write_atomically
from smart_tui.settings import Settings
from smart_tui.storage import Store, utc_now

log = logging.getLogger("smart_tui.metrics")

# Every outcome gets a 0/1 line, so an alert can say `smart_last_decision{outcome=
# "REVERT"} == 1` without knowing which outcomes exist.
OUTCOMES = ("KEEP", "REVERT", "INCONCLUSIVE", "APPLY_FAILED", "ABORTED")


@dataclass
class Family:
    """One metric: its help text, type and samples (labels, value)."""

    name: str
    help: str
    kind: str = "gauge"
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float | None, **labels: str) -> None:
        if value is not None and math.isfinite(value):
            self.samples.append((labels, float(value)))


def escape_label(value: str) -> str:
    """A label value as the text format wants it: \\, " and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render(families: Iterable[Family]) -> str:
    """The exposition text of ``families`` (families without samples are left out)."""
    lines = []
    for family in families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            shown = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            label_text = f"{{{shown}}}" if shown else ""
            lines.append(f"{family.name}{label_text} {_format_value(value)}")
    return "\n".join(lines) + "\n"


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def _seconds(summary: Mapping[str, Any], key: str) -> float | None:
    value = summary.get(key)
    return value / 1000 if isinstance(value, int | float) else None


def _ratio(summary: Mapping[str, Any]) -> float | None:
    value = summary.get("error_pct")
    return value / 100 if isinstance(value, int | float) else None


def _latest_finished_runs(store: Store) -> list[dict[str, Any]]:
    cursor = store.db.execute(
        "select id, experiment_id, started_at, finished_at, outcome, kept_variant "
        "from runs r where finished_at is not null and started_at = (select "
        "max(started_at) from runs l where l.experiment_id = r.experiment_id and "
        "l.finished_at is not null) order by experiment_id"
    )
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def collect(store: Store) -> list[Family]:
    """The metric families for the record as it is now."""
    decision = Family(
        "smart_last_decision",
        "Outcome of the latest finished run per experiment (1 = this outcome).",
    )
    kept = Family(
        "smart_last_kept",
        "1 if the latest run of the experiment kept a variant, else 0.",
    )
    started = Family(
        "smart_last_run_timestamp_seconds",
        "When the latest finished run of the experiment started (Unix time).",
    )
    duration = Family(
        "smart_last_run_duration_seconds", "How long the latest finished run took."
    )
    base_p50 = Family("smart_baseline_p50_seconds", "Baseline median latency.")
    base_p99 = Family("smart_baseline_p99_seconds", "Baseline 99th pct latency.")
    base_5xx = Family("smart_baseline_5xx_ratio", "Baseline share of 5xx answers.")
    var_p50 = Family("smart_variant_p50_seconds", "Variant median latency.")
    var_p99 = Family("smart_variant_p99_seconds", "Variant 99th pct latency.")
    var_5xx = Family("smart_variant_5xx_ratio", "Variant share of 5xx answers.")
    worse = Family(
        "smart_baseline_worse",
        "1 if the newest baseline is worse than its recent history on this metric.",
    )
    queue_length = Family("smart_queue_length", "Experiments waiting in the queue.")
    generated = Family(
        "smart_metrics_generated_timestamp_seconds", "When this file was written."
    )

    for run in _latest_finished_runs(store):
        experiment = str(run["experiment_id"])
        outcome = str(run["outcome"] or "")
        for name in sorted({*OUTCOMES, outcome} - {""}):
            decision.add(
                1.0 if name == outcome else 0.0, experiment=experiment, outcome=name
            )
        kept.add(1.0 if run["kept_variant"] else 0.0, experiment=experiment)
        start, end = _epoch(run["started_at"]), _epoch(run["finished_at"])
        started.add(start, experiment=experiment)
        if start is not None and end is not None:
            duration.add(end - start, experiment=experiment)
        for window in store.windows(str(run["id"])):
            summary = window["summary"]
            if window["role"] == "baseline":
                base_p50.add(_seconds(summary, "p50_ms"), experiment=experiment)
                base_p99.add(_seconds(summary, "p99_ms"), experiment=experiment)
                base_5xx.add(_ratio(summary), experiment=experiment)
                continue
            labels = {"experiment": experiment, "variant": str(window["variant"])}
            var_p50.add(_seconds(summary, "p50_ms"), **labels)
            var_p99.add(_seconds(summary, "p99_ms"), **labels)
            var_5xx.add(_ratio(summary), **labels)

    for experiment, points in trends.read_series(store).items():
        flagged = {item.metric for item in trends.regressions(points)}
        for metric in trends.METRICS:
            worse.add(float(metric in flagged), experiment=experiment, metric=metric)

    count = store.db.execute("select count(*) from queue").fetchone()[0]
    queue_length.add(float(count))
    generated.add(_epoch(utc_now()))
    return [
        decision,
        kept,
        started,
        duration,
        base_p50,
        base_p99,
        base_5xx,
        var_p50,
        var_p99,
        var_5xx,
        worse,
        queue_length,
        generated,
    ]


def write_textfile(settings: Settings, store: Store) -> Path | None:
    """Write the metrics to METRICS_PATH; None when it is empty or the write failed
    (logged: monitoring must never fail a run)."""
    path = settings.metrics_file
    if path is None:
        return None
    try:
        # node_exporter reads only *.prom: the .tmp name is never half read.
        write_atomically(path, render(collect(store)), suffix=".tmp")
    except OSError as exc:
        log.error(
            "metrics not written to %s: %s; check METRICS_PATH and that this user "
            "may write its folder",
            path,
            exc,
        )
        return None
    return path
