"""Measurement sources, chosen per experiment by ``"source"`` in meta.json: the probe
(default), the experiment's measure script, nginx's access log, or wrk/wrk2.

``measure_window`` measures one window with the experiment's source and returns a
``ProbeResult``; ``aggregate_decision`` judges windows that only have aggregates.
A source that fails raises ``SourceError`` (one line: experiment, source, fix)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from pathlib import Path

from smart_tui.experiments import Experiment
from smart_tui.probe import ProbeConfig, ProbeResult, run_probe
from smart_tui.probe.run import SamplesCallback
from smart_tui.sources.access_log import LOG_FORMAT, measure_access_log
from smart_tui.sources.script import measure_script
from smart_tui.sources.verdict import aggregate_decision
from smart_tui.sources.window import (
    Aggregates,
    SecondCallback,
    SourceError,
    SourceResult,
)
from smart_tui.sources.wrk import measure_wrk

__all__ = [
    "LOG_FORMAT",
    "Aggregates",
    "SourceError",
    "SourceResult",
    "aggregate_decision",
    "measure_window",
]


def measure_window(
    experiment: Experiment,
    config: ProbeConfig,
    *,
    env: Mapping[str, str],
    on_second: SecondCallback | None,
    stop: threading.Event,
    on_samples: SamplesCallback | None,
    access_log: Path | None,
    script_timeout_s: float = 120.0,
) -> ProbeResult:
    """Measure one window of ``config`` (URL, duration, warmup) with the experiment's
    source. ``env`` is the scripts' environment; ``access_log`` the log read when
    meta.json names none; a script may run ``script_timeout_s`` past the window."""
    source = experiment.meta.source
    if source == "probe":
        return run_probe(config, on_second=on_second, stop=stop, on_samples=on_samples)
    if source == "wrk":
        return measure_wrk(
            experiment, config, headers=experiment.meta.headers, stop=stop
        )

    # Passive sources intend nothing: their rate is what they saw.
    observed = dataclasses.replace(config, rate_rps=0.0)
    if source == "script":
        return measure_script(
            experiment,
            observed,
            env=env,
            on_second=on_second,
            stop=stop,
            timeout_s=config.total_s + script_timeout_s,
        )
    return measure_access_log(
        experiment,
        observed,
        path=_log_path(experiment, access_log),
        on_second=on_second,
        stop=stop,
        on_samples=on_samples,
    )


def _log_path(experiment: Experiment, default: Path | None) -> Path:
    named = experiment.meta.access_log
    if named:
        # A relative path is the experiment folder's, like its scripts.
        return experiment.path / named
    if default is None:
        raise SourceError(
            f'{experiment.id}: "source": "access_log" but no log is known; set '
            '"access_log": "/var/log/nginx/access.log" in meta.json'
        )
    return default
