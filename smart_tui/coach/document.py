"""The document a finished run sends to the coach (``docs/coach-api.md``, version 1):
the experiment and its variants, each measured window, each decision with its
numbers and reasons, the thresholds, host facts and the operator's ``context.md``.
No setting, path, URL or secret goes in; the host's name does not either."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import psutil

from smart_tui import __version__
from smart_tui.experiments import Experiment
from smart_tui.settings import Settings
from smart_tui.storage import Store, utc_now

log = logging.getLogger("smart_tui.coach.document")

SCHEMA = "smart-tui.coach-request"
VERSION = 1
CONTEXT_FILE = "context.md"
CONTEXT_MAX_CHARS = 8000
# A decision is a close call when the p50 gain is within this share of IMPROVE_PCT
# of the threshold (seed rule), or its confidence interval straddles it (stats).
CLOSE_CALL_FRACTION = 0.25
WINDOW_FIELDS = (
    "requests",
    "duration_s",
    "intended_rps",
    "achieved_rps",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "error_pct",
    "status_5xx",
    "conn_errors",
    "timeouts",
    "seconds_scored",
    "fell_behind",
)
_NOT_METRICS = frozenset({"decision", "policy", "reasons"})
SAMPLE_VARIANTS = ("baseline", "candidate")


def read_context(settings: Settings) -> str:
    """The operator's notes from BASE_DIR/context.md, cut to CONTEXT_MAX_CHARS."""
    path = settings.base_dir / CONTEXT_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        log.warning("%s not read (%s); the coach gets no notes", path, exc.strerror)
        return ""
    if len(text) > CONTEXT_MAX_CHARS:
        return text[:CONTEXT_MAX_CHARS] + "\n[cut: context.md is longer]"
    return text


def host_facts() -> dict[str, Any]:
    """What kind of machine ran the experiment; its name is left out."""
    try:
        load_1m: float | None = round(os.getloadavg()[0], 2)
    except OSError:
        load_1m = None
    return {
        "os": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_mb": psutil.virtual_memory().total // 2**20,
        "load_1m": load_1m,
        "python": platform.python_version(),
        "smart_tui": __version__,
    }


def close_call(details: Mapping[str, Any], improve_pct: float) -> bool:
    """Whether a decision's p50 effect sits near the IMPROVE_PCT threshold."""
    effect = details.get("effect")
    if not isinstance(effect, Mapping) or effect.get("ratio") is None:
        return False
    threshold = 1 - improve_pct / 100
    low, high = effect.get("low"), effect.get("high")
    if low is not None and high is not None:
        return bool(low <= threshold <= high)
    gain_pct = (1 - float(effect["ratio"])) * 100
    return abs(gain_pct - improve_pct) <= improve_pct * CLOSE_CALL_FRACTION


def uncertainty(
    outcome: str | None, decisions: Sequence[Mapping[str, Any]], improve_pct: float
) -> str | None:
    """Why this run is uncertain ('inconclusive', 'close call'), or None."""
    if outcome == "INCONCLUSIVE" or any(
        row["decision"] == "INCONCLUSIVE" for row in decisions
    ):
        return "inconclusive"
    if any(close_call(row["details"], improve_pct) for row in decisions):
        return "close call"
    return None


def _window(row: Mapping[str, Any]) -> dict[str, Any]:
    summary = row["summary"]
    return {
        "variant": row["variant"],
        "role": row["role"],
        "started_at": row["started_at"],
        **{name: summary.get(name) for name in WINDOW_FIELDS},
    }


def _decision(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "variant": row["variant"],
        "decision": row["decision"],
        "policy": row["policy"],
        "acted": row["acted"],
        "reasons": list(row["reasons"]),
        "metrics": {
            key: value
            for key, value in row["details"].items()
            if key not in _NOT_METRICS
        },
    }


def build_document(
    settings: Settings, store: Store, run_id: str, experiment: Experiment
) -> dict[str, Any]:
    """The version-1 coach request for a run recorded in ``store``."""
    run = store.run(run_id)
    if run is None:
        raise LookupError(f"run {run_id} is not in the database")
    decisions = store.decisions(run_id)
    meta = experiment.meta
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "sent_at": utc_now(),
        "run": {
            "id": run.id,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "status": run.status,
            "outcome": run.outcome,
            "kept_variant": run.kept_variant,
            "trigger": run.trigger,
            "uncertain": uncertainty(run.outcome, decisions, settings.improve_pct),
        },
        "experiment": {
            "id": meta.id,
            "description": meta.description,
            "target_path": _path_only(meta.target_url),
            "baseline": experiment.baseline.name,
            "variants": [variant.name for variant in meta.variants],
        },
        "thresholds": {
            "decision_policy": settings.decision_policy,
            "improve_pct": settings.improve_pct,
            "max_err_delta_pct": settings.max_err_delta_pct,
            "confidence": settings.confidence,
            "baseline_seconds": settings.baseline_seconds,
            "experiment_seconds": settings.experiment_seconds,
            "approval": settings.approval,
        },
        "windows": [_window(row) for row in store.windows(run_id)],
        "decisions": [_decision(row) for row in decisions],
        "host": host_facts(),
        "notes": read_context(settings),
    }


def _path_only(target_url: str) -> str:
    """meta.json's target as a path: a full URL could name an internal host."""
    if target_url.startswith("/"):
        return target_url
    return "/" + target_url.split("://", 1)[-1].partition("/")[2]


def sample_document(settings: Settings) -> dict[str, Any]:
    """A made-up but well-formed request for `smart-tui coach test`."""
    window = dict.fromkeys(WINDOW_FIELDS, 0)
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "sent_at": utc_now(),
        "test": True,
        "run": {
            "id": "test",
            "outcome": "INCONCLUSIVE",
            "kept_variant": None,
            "uncertain": "inconclusive",
        },
        "experiment": {
            "id": "000_sample",
            "description": "A test request from `smart-tui coach test`",
            "target_path": "/",
            "baseline": "baseline",
            "variants": list(SAMPLE_VARIANTS),
        },
        "thresholds": {"improve_pct": settings.improve_pct},
        "windows": [
            {**window, "variant": "baseline", "role": "baseline", "p50_ms": 2.0},
            {**window, "variant": "candidate", "role": "variant", "p50_ms": 1.9},
        ],
        "decisions": [
            {
                "variant": "candidate",
                "decision": "INCONCLUSIVE",
                "reasons": ["a sample: p50 -5%, too few requests to tell"],
                "metrics": {},
            }
        ],
        "host": host_facts(),
        "notes": "",
    }
