"""The ``script`` source: the experiment's measure command (the bash seed's
``measure.sh``) prints either CSV samples ``timestamp,latency_ms,status`` (one per
request, no header needed) or one JSON object of window aggregates.

It runs once per window with ``bash -c`` in the experiment folder, after the warmup
and settle seconds, with the scripts' environment plus ``SMART_MEASURE_SECONDS``."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from smart_tui.experiments import Experiment
from smart_tui.probe import STATUS_CONN_ERROR, ProbeConfig
from smart_tui.sources.window import (
    Aggregates,
    SampleWindow,
    SecondCallback,
    SourceError,
    SourceResult,
    aggregate_result,
)

log = logging.getLogger("smart_tui.sources")

EXPECTED = "expected timestamp,latency_ms,status or one JSON object"
# Timestamps below this are read as seconds since the script started, not Unix time.
UNIX_TIME_MIN = 1e9
_POLL_S = 0.2


def measure_script(
    experiment: Experiment,
    config: ProbeConfig,
    *,
    env: Mapping[str, str],
    on_second: SecondCallback | None,
    stop: threading.Event,
    timeout_s: float,
) -> SourceResult:
    """Run the measure command for one window and read what it printed."""
    command = experiment.meta.measure
    # Settle and warmup pass unmeasured: the script's requests all count.
    if stop.wait(config.warmup_seconds):
        return _stopped(config)

    started = time.time()
    output = _run(experiment, command, config, env, stop, timeout_s)
    if output is None:
        return _stopped(config)
    text = output.strip()
    if not text:
        raise SourceError(
            f"{experiment.id}: `{command}` printed nothing; {EXPECTED} "
            "(see README: Measurement sources)"
        )

    if text.startswith("{"):
        aggregates = _read_json(experiment.id, command, text)
        return aggregate_result(config, "script", aggregates)
    # The script has ended: a guardrail or sequential look (``on_samples``) would
    # stop a window that is already over, so the whole window is judged at once.
    window = SampleWindow(config, on_second, None, warmup_seconds=0)
    window.add_all(*_read_csv(experiment.id, command, text, started))
    return window.result("script")


def _stopped(config: ProbeConfig) -> SourceResult:
    return SampleWindow(config, None, None, warmup_seconds=0).result(
        "script", stopped_early=True
    )


def _run(
    experiment: Experiment,
    command: str,
    config: ProbeConfig,
    env: Mapping[str, str],
    stop: threading.Event,
    timeout_s: float,
) -> str | None:
    """The command's stdout, or None when ``stop`` ended it; stderr goes to the log."""
    log.info("measure: %s", command)
    try:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=experiment.path,
            env={
                **os.environ,
                **env,
                "SMART_MEASURE_SECONDS": f"{config.duration_s:g}",
            },
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise SourceError(
            f"{experiment.id}: cannot start `{command}`: {exc.strerror}"
        ) from None

    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                stdout, stderr = process.communicate(timeout=_POLL_S)
                break
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    _kill_group(process)
                    process.communicate()
                    return None
                if time.monotonic() > deadline:
                    _kill_group(process)
                    process.communicate()
                    raise SourceError(
                        f"{experiment.id}: `{command}` ran longer than "
                        f"{timeout_s:g} s and was killed; make it finish within "
                        "SMART_MEASURE_SECONDS or raise SCRIPT_TIMEOUT_SECONDS"
                    ) from None
    except BaseException:
        # Interrupted (a signal turned into an exception): leave no script behind.
        _kill_group(process)
        process.wait()
        raise

    for line in stderr.splitlines()[-20:]:
        log.info("  | %s", line)
    if process.returncode != 0:
        last = (stderr.strip().splitlines() or [""])[-1][:200]
        raise SourceError(
            f"{experiment.id}: `{command}` exited {process.returncode}"
            + (f": {last}" if last else "")
            + "; fix the script or run it by hand in the experiment folder"
        )
    return stdout


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _read_json(experiment_id: str, command: str, text: str) -> Aggregates:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{experiment_id}: `{command}` printed malformed JSON at line "
            f"{exc.lineno} column {exc.colno} ({exc.msg}); {EXPECTED}"
        ) from None
    try:
        return Aggregates.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the object"
        raise SourceError(
            f"{experiment_id}: `{command}` printed JSON whose {where!r} is wrong "
            f"({first['msg'].lower()}); expected at least "
            '{"requests": N, "p50_ms": X} (see README: Measurement sources)'
        ) from None


def _read_csv(
    experiment_id: str, command: str, text: str, started_unix_s: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int16]]:
    """Send times (s from the script's start), latencies (ms), statuses."""
    origin_s = math.floor(started_unix_s)
    elapsed_s = time.time() - origin_s
    t_s: list[float] = []
    latencies_ms: list[float] = []
    statuses: list[int] = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or (number == 1 and row[0].strip() == "timestamp"):
            continue
        try:
            stamp, latency, status = (float(row[0]), float(row[1]), int(row[2]))
            if len(row) != 3 or not (math.isfinite(latency) and latency >= 0):
                raise ValueError
            if status != STATUS_CONN_ERROR and not 100 <= status <= 999:
                raise ValueError
        except (ValueError, IndexError):
            shown = ",".join(row)[:60]
            raise SourceError(
                f"{experiment_id}: `{command}` printed {shown!r} on line {number}; "
                f"{EXPECTED}"
            ) from None
        offset_s = stamp - origin_s if stamp >= UNIX_TIME_MIN else stamp
        if not -1 <= offset_s <= elapsed_s + 1:
            raise SourceError(
                f"{experiment_id}: `{command}` printed timestamp {row[0]} on line "
                f"{number}, outside the {elapsed_s:.0f} s it ran; print Unix "
                "seconds, e.g. $(date +%s)"
            )
        t_s.append(max(0.0, offset_s))
        latencies_ms.append(latency)
        statuses.append(status)
    if not t_s:
        raise SourceError(
            f"{experiment_id}: `{command}` printed a header but no samples; {EXPECTED}"
        )
    return (
        np.array(t_s, dtype=np.float64),
        np.array(latencies_ms, dtype=np.float64),
        np.array(statuses, dtype=np.int16),
    )
