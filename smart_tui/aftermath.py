"""What happens once a run has left the server safe: the dashboard, the Prometheus
textfile, the coach and the webhooks.

Every step here is best effort and bounded in time: a full disk, a slow coach or a
dead webhook is logged and never changes what the run decided or left live."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import jinja2

from smart_tui import dashboard, metrics, outreach
from smart_tui import queue as queue_mod
from smart_tui.experiments import Experiment
from smart_tui.outreach import Recommendation
from smart_tui.settings import Settings
from smart_tui.storage import Store

log = logging.getLogger("smart_tui.aftermath")


def refresh_dashboard(settings: Settings, store: Store) -> Path | None:
    """Rewrite the dashboard; a failure is logged and never fails the run."""
    try:
        return dashboard.write_dashboard(store, settings.www_path)
    except (OSError, sqlite3.Error, jinja2.TemplateError) as exc:
        log.error("dashboard not written to %s: %s", settings.www_path, exc)
        return None


def after_run(
    settings: Settings, store: Store, run_id: str, experiment: Experiment
) -> Path | None:
    """Publish a finished run; returns the dashboard's path if it was written."""
    page = refresh_dashboard(settings, store)
    metrics.write_textfile(settings, store)
    result = outreach.after_run(settings, store, run_id, experiment)
    if result.recommendation is not Recommendation.NONE:
        # COACH_MODE=act: an INCONCLUSIVE becomes another measurement, never a KEEP.
        try:
            queue_mod.add(
                store, experiment.id, reason=f"coach: {result.recommendation}"
            )
            log.info("coach advice %s: %s queued again", result.recommendation, run_id)
        except sqlite3.Error as exc:
            log.error("could not queue the coach's rerun: %s", exc)
    return page


def after_failure(
    settings: Settings,
    store: Store,
    run_id: str,
    experiment: Experiment,
    kind: str,
    message: str,
) -> None:
    """Publish a run that failed (``kind``: apply-failed, revert-failed...)."""
    refresh_dashboard(settings, store)
    metrics.write_textfile(settings, store)
    outreach.notify_event(
        settings, kind, None, message, run_id=run_id, experiment_id=experiment.id
    )


def notify(
    settings: Settings, kind: str, message: str, run_id: str, experiment_id: str
) -> None:
    """A mid-run event (guardrail rollback, crash recovery), after the action."""
    outreach.notify_event(
        settings, kind, None, message, run_id=run_id, experiment_id=experiment_id
    )
