"""The ``wrk`` source: run wrk2 (at the window's rate) or else wrk (as fast as it can)
against the target for the window, and read the aggregates its Lua ``done()`` hook
prints as one JSON line. wrk reports no per-request samples.

wrk is closed loop: a stalled server slows it down instead of showing in its
percentiles (coordinated omission); wrk2's fixed rate corrects for that."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from smart_tui.experiments import Experiment
from smart_tui.probe import USER_AGENT, ProbeConfig
from smart_tui.sources.window import (
    Aggregates,
    SampleWindow,
    SourceError,
    SourceResult,
    aggregate_result,
)

log = logging.getLogger("smart_tui.sources")

REPORT_PREFIX = "SMART_WRK "
THREADS_MAX = 2
# Past the window and the request timeout, how long wrk may take to report.
EXIT_GRACE_S = 15.0

# Counts 5xx in each thread (wrk's own "status errors" mix 4xx in), then prints
# the window's figures once; wrk's latencies are in microseconds.
REPORT_LUA = """\
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  status_5xx = 0
end

function response(status, headers, body)
  if status >= 500 then
    status_5xx = status_5xx + 1
  end
end

function done(summary, latency, requests)
  local n5xx = 0
  for _, thread in ipairs(threads) do
    n5xx = n5xx + thread:get("status_5xx")
  end
  local errors = summary.errors
  local failed = errors.connect + errors.timeout
  io.write(string.format(
    'SMART_WRK {"requests": %d, "duration_s": %.6f, "p50_ms": %.3f, ' ..
    '"p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "mean_ms": %.3f, ' ..
    '"status_5xx": %d, "conn_errors": %d, "timeouts": %d}\\n',
    summary.requests + failed, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3, latency.mean / 1e3,
    n5xx, errors.connect, errors.timeout))
end
"""


def wrk_command(config: ProbeConfig) -> tuple[list[str], str]:
    """The wrk2 or wrk argv prefix for this window's rate, and its name."""
    wrk2 = shutil.which("wrk2")
    if wrk2 and config.rate_rps > 0:
        return [wrk2, "-R", f"{math.ceil(config.rate_rps)}"], "wrk2"
    wrk = shutil.which("wrk")
    if wrk:
        return [wrk], "wrk"
    raise SourceError(
        "neither wrk nor wrk2 is on PATH; install wrk (apt-get install wrk) or "
        'choose another "source" in meta.json'
    )


def measure_wrk(
    experiment: Experiment,
    config: ProbeConfig,
    *,
    headers: Mapping[str, str],
    stop: threading.Event,
) -> SourceResult:
    """Load ``config.url`` with wrk for ``config.duration_s`` after the warmup."""
    prefix, name = wrk_command(config)
    # Settle and warmup pass without load; the report covers the measured part.
    if stop.wait(config.warmup_seconds):
        return _stopped(config, name)

    with tempfile.TemporaryDirectory(prefix="smart-wrk-") as folder:
        script = Path(folder) / "report.lua"
        script.write_text(REPORT_LUA, encoding="utf-8")
        argv = [
            *prefix,
            "--threads",
            str(min(THREADS_MAX, config.connections)),
            "--connections",
            str(config.connections),
            "--duration",
            f"{max(1, math.ceil(config.duration_s))}s",
            "--timeout",
            f"{max(1, math.ceil(config.timeout_s))}s",
            "--script",
            str(script),
            "--header",
            f"User-Agent: {USER_AGENT}",
        ]
        for header, value in headers.items():
            argv += ["--header", f"{header}: {value}"]
        argv.append(config.url)
        output, returncode = _run(argv, config, stop)

    for line in output.splitlines():
        if not line.startswith(REPORT_PREFIX):
            log.info("  | %s", line)
    report = [line for line in output.splitlines() if line.startswith(REPORT_PREFIX)]
    if returncode != 0 or not report:
        if stop.is_set():
            return _stopped(config, name)
        last = (output.strip().splitlines() or ["no output"])[-1][:200]
        raise SourceError(
            f"{experiment.id}: {name} against {config.url} exited {returncode} "
            f"without a report: {last}; run `{name} {config.url}` by hand to see why"
        )
    return aggregate_result(
        config, name, _aggregates(experiment.id, name, config.url, report[-1])
    )


def _stopped(config: ProbeConfig, name: str) -> SourceResult:
    """A window stopped before wrk reported: no figures at all."""
    window = SampleWindow(config, None, None, warmup_seconds=0)
    return window.result(name, stopped_early=True)


def _run(
    argv: list[str], config: ProbeConfig, stop: threading.Event
) -> tuple[str, int]:
    """wrk's combined output and exit code; ``stop`` interrupts it as Ctrl-C would,
    so it still prints the report of the part that ran."""
    log.info("measure: %s", " ".join(argv))
    deadline = time.monotonic() + config.duration_s + config.timeout_s + EXIT_GRACE_S
    interrupted = False
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            while True:
                try:
                    output, _ = process.communicate(timeout=0.2)
                    return output, process.returncode
                except subprocess.TimeoutExpired:
                    if stop.is_set() and not interrupted:
                        with contextlib.suppress(ProcessLookupError):
                            process.send_signal(signal.SIGINT)
                        interrupted = True
                    if time.monotonic() > deadline:
                        process.kill()
                        output, _ = process.communicate()
                        return output, -9
        except BaseException:
            process.kill()
            raise


def _aggregates(experiment_id: str, name: str, url: str, line: str) -> Aggregates:
    try:
        figures = json.loads(line.removeprefix(REPORT_PREFIX))
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{experiment_id}: {name}'s report is not JSON ({exc.msg}): {line[:120]}"
        ) from None
    if not figures.get("requests") or figures["requests"] == figures["conn_errors"]:
        raise SourceError(
            f"{experiment_id}: {name} got no answer from {url} "
            f"({figures.get('conn_errors', 0)} connection errors); is nginx running?"
        )
    try:
        return Aggregates.model_validate(figures)
    except ValidationError as exc:
        raise SourceError(
            f"{experiment_id}: {name}'s report is unreadable ({exc.errors()[0]['msg']})"
            f": {line[:120]}"
        ) from None
