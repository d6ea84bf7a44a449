"""The caller's side of a probe: start the load process, turn its frames into results.

``run_probe`` blocks, calls ``on_second`` live as each second finishes, and returns a
``ProbeResult``. The load runs in a child process so the caller's own work (a TUI, a
database) never delays a request."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from smart_tui.errors import ExitCode, SmartError, TargetUnreachable
from smart_tui.hostwatch import Thresholds
from smart_tui.probe.engine import FRAME_HEADER
from smart_tui.probe.model import (
    SCHEDULER_LAG_P99_MAX_MS,
    SENT_RATIO_MIN,
    STATUS_CONN_ERROR,
    STATUS_TIMEOUT,
    STATUS_UNSENT,
    ProbeConfig,
    ProbeResult,
    SecondStats,
    format_summary,
    new_histogram,
)

NS_PER_MS = 1_000_000

SamplesCallback = Callable[
    [
        SecondStats,
        npt.NDArray[np.float64],
        npt.NDArray[np.float64],
        npt.NDArray[np.int16],
    ],
    None,
]
# More than this share of excluded seconds leaves too little to judge a window by.
EXCLUDED_SHARE_MAX = 0.25
# Beyond the window and the last timeout, how long the child may take to wrap up.
EXIT_GRACE_S = 10.0
START_GRACE_S = 15.0


def run_probe(
    config: ProbeConfig,
    on_second: Callable[[SecondStats], None] | None = None,
    stop: threading.Event | None = None,
    *,
    on_started: Callable[[int], None] | None = None,
    thresholds: Thresholds | None = None,
    on_samples: SamplesCallback | None = None,
) -> ProbeResult:
    """Measure ``config.url`` for one window and return what was seen.

    ``on_second`` runs in the calling thread for each finished second, in order.
    Setting ``stop`` ends the window early (the result says ``stopped_early``).
    ``on_started`` gets the load process's pid (to watch its CPU, or in tests to
    stop it). ``on_samples`` gets each finished second's raw requests (stats,
    intended send times in s, latencies in ms, statuses) before ``on_second``, for
    callers that judge the window as it grows. Raises ``TargetUnreachable`` when
    every request of the first second failed to connect, ``ConfigError`` for a
    bad config, ``SmartError`` if the load process died."""
    config.validate()
    thresholds = thresholds or Thresholds()
    with tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "smart_tui.probe", "--child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err_file,
            close_fds=True,
        )
        try:
            return _drive(
                proc, config, thresholds, on_second, stop, on_started, on_samples
            )
        except _ChildVanished:
            proc.wait(timeout=5)
            err_file.seek(0)
            tail = err_file.read().decode("utf-8", "replace").strip().splitlines()
            raise SmartError(
                f"probe process ended without a result (exit {proc.returncode}): "
                + (" | ".join(tail[-3:]) or "no message")
            ) from None
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            raise
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


class _ChildVanished(Exception):
    """The load process closed its pipe before sending its final frame."""


class _Collector:
    """Accumulates per-second frames into arrays and ``SecondStats``."""

    def __init__(self, config: ProbeConfig) -> None:
        self.config = config
        self.t_ns: list[npt.NDArray[np.int64]] = []
        self.lat_ns: list[npt.NDArray[np.int64]] = []
        self.status: list[npt.NDArray[np.int16]] = []
        self.seconds: list[SecondStats] = []
        self.spans_s: list[float] = []
        self.timeout_ms = config.timeout_s * 1000

    def add(self, frame: dict[str, Any]) -> SecondStats:
        t_ns = np.frombuffer(frame["intended_ns"], dtype=np.int64)
        lat_ns = np.frombuffer(frame["latency_ns"], dtype=np.int64)
        status = np.frombuffer(frame["status"], dtype=np.int16)
        sched_us = np.frombuffer(frame["sched_lag_us"], dtype=np.int32)
        self.t_ns.append(t_ns)
        self.lat_ns.append(lat_ns)
        self.status.append(status)
        self.spans_s.append(frame["span_s"])
        lat_ms = lat_ns / NS_PER_MS
        hist = new_histogram(self.config.timeout_s)
        if lat_ns.size:
            values, counts = np.unique(
                np.clip(lat_ns // 1000, 1, hist.highest_trackable_value),
                return_counts=True,
            )
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                hist.record_value(value, count)

        def pct(q: float) -> float:
            return float(np.percentile(lat_ms, q)) if lat_ms.size else math.nan

        reasons: list[str] = list(frame["flag_reasons"])
        sched_p99_ms = (
            float(np.percentile(sched_us, 99)) / 1000 if sched_us.size else 0.0
        )
        if sched_p99_ms > SCHEDULER_LAG_P99_MAX_MS:
            # The probe itself sent late (CPU-starved): those latencies are ours.
            reasons.append(f"probe behind schedule (p99 {sched_p99_ms:.0f} ms)")
        stats = SecondStats(
            second=frame["second"],
            intended=int(status.size),
            sent=int((status != STATUS_UNSENT).sum()),
            completed=int((status >= 100).sum()),
            status_2xx=int(((status >= 200) & (status < 300)).sum()),
            status_3xx=int(((status >= 300) & (status < 400)).sum()),
            status_4xx=int(((status >= 400) & (status < 500)).sum()),
            status_5xx=int((status >= 500).sum()),
            conn_errors=int((status == STATUS_CONN_ERROR).sum()),
            timeouts=int((status == STATUS_TIMEOUT).sum()),
            unsent=int((status == STATUS_UNSENT).sum()),
            p50_ms=pct(50),
            p90_ms=pct(90),
            p99_ms=pct(99),
            max_ms=float(lat_ms.max()) if lat_ms.size else math.nan,
            achieved_rps=frame["completions"] / frame["span_s"],
            lag_ms=float(frame["lag_ms"]),
            scheduler_lag_p99_ms=sched_p99_ms,
            flagged=bool(reasons),
            flag_reason="; ".join(reasons),
            warmup=bool(frame["warmup"]),
            steal_pct=frame["steal_pct"],
            cpu_pressure_pct=frame["cpu_pressure_pct"],
            hdr=hist.encode().decode("ascii") if lat_ns.size else "",
        )
        self.seconds.append(stats)
        return stats

    def last_second(
        self,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int16]]:
        """The latest second's requests: send times (s), latencies (ms), statuses."""
        return (
            self.t_ns[-1] / 1e9,
            self.lat_ns[-1] / NS_PER_MS,
            self.status[-1],
        )

    def result(self, done: dict[str, Any], pid: int) -> ProbeResult:
        cfg = self.config

        def cat(parts: list[npt.NDArray[Any]], dtype: Any) -> npt.NDArray[Any]:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        t_s = cat(self.t_ns, np.int64) / 1e9
        lat_ms = cat(self.lat_ns, np.int64) / NS_PER_MS
        status = cat(self.status, np.int16).astype(np.int16)
        order = np.argsort(t_s, kind="stable")  # closed loop interleaves connections
        t_s, lat_ms, status = t_s[order], lat_ms[order], status[order]
        scored = [
            (s, span)
            for s, span in zip(self.seconds, self.spans_s, strict=True)
            if s.scored
        ]
        measured_s = sum(span for _, span in scored)
        intended = sum(s.intended for s, _ in scored)
        sent = sum(s.sent for s, _ in scored)
        completions = sum(s.achieved_rps * span for s, span in scored)
        # Closed loop has no intended rate; it "intends" what it managed to send.
        intended_rps = cfg.rate_rps or (intended / measured_s if measured_s else 0.0)
        reasons = []
        if cfg.rate_rps and intended and sent < SENT_RATIO_MIN * intended:
            reasons.append(
                f"only {sent} of {intended} intended requests could be sent "
                f"({100 * sent / intended:.1f}%): connection cap or probe too slow"
            )
        measured = [s for s in self.seconds if not s.warmup]
        flagged = [s for s in measured if s.flagged]
        if measured and len(flagged) > EXCLUDED_SHARE_MAX * len(measured):
            reasons.append(
                f"{len(flagged)} of {len(measured)} seconds excluded "
                "(probe or host too busy to trust the window)"
            )
        if done.get("stopped_early") and not scored:
            reasons.append("stopped before any second could be scored")
        excluded = [s.second for s in self.seconds if s.flagged and not s.warmup]
        return ProbeResult(
            config=cfg,
            latencies_ms=lat_ms.astype(np.float64),
            statuses=status,
            t_s=t_s.astype(np.float64),
            per_second=self.seconds,
            intended_rps=float(intended_rps),
            achieved_rps=completions / measured_s if measured_s else 0.0,
            duration_s=measured_s,
            fell_behind=bool(reasons),
            fell_behind_reason="; ".join(reasons),
            excluded_seconds=excluded,
            exclusion_reasons={
                s.second: s.flag_reason for s in self.seconds if s.second in excluded
            },
            stopped_early=bool(done.get("stopped_early")),
            scheduler=str(done.get("scheduler", "")),
            probe_pid=pid,
        )


def _read_frames(stream: IO[bytes], buf: bytearray) -> list[tuple[str, Any]]:
    chunk = os.read(stream.fileno(), 1 << 20)
    if not chunk:
        raise EOFError
    buf += chunk
    frames = []
    while len(buf) >= FRAME_HEADER.size:
        (size,) = FRAME_HEADER.unpack_from(buf)
        if len(buf) < FRAME_HEADER.size + size:
            break
        body = bytes(buf[FRAME_HEADER.size : FRAME_HEADER.size + size])
        del buf[: FRAME_HEADER.size + size]
        # The frames come from our own child process over a private pipe.
        frames.append(pickle.loads(body))
    return frames


def _drive(
    proc: subprocess.Popen[bytes],
    config: ProbeConfig,
    thresholds: Thresholds,
    on_second: Callable[[SecondStats], None] | None,
    stop: threading.Event | None,
    on_started: Callable[[int], None] | None,
    on_samples: SamplesCallback | None,
) -> ProbeResult:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(
        json.dumps(
            {"config": config.to_dict(), "thresholds": thresholds.__dict__}
        ).encode()
    )
    proc.stdin.close()
    collector = _Collector(config)
    buf = bytearray()
    deadline = (
        time.monotonic()
        + START_GRACE_S
        + config.total_s
        + config.timeout_s
        + EXIT_GRACE_S
    )
    stop_sent = False
    pid = proc.pid
    while True:
        if stop is not None and stop.is_set() and not stop_sent:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            stop_sent = True
        if time.monotonic() > deadline:
            proc.kill()
            raise SmartError(
                f"probe of {config.url} did not finish in time; the load process "
                "was killed"
            )
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if not ready:
            continue
        try:
            frames = _read_frames(proc.stdout, buf)
        except EOFError:
            raise _ChildVanished from None
        for kind, body in frames:
            if kind == "hello":
                pid = int(body["pid"])
                if on_started is not None:
                    on_started(pid)
            elif kind == "second":
                stats = collector.add(body)
                if on_samples is not None:
                    on_samples(stats, *collector.last_second())
                if on_second is not None:
                    on_second(stats)
            elif kind == "error":
                raise SmartError(f"probe process failed: {body['message']}")
            elif kind == "done":
                if body.get("unreachable"):
                    raise TargetUnreachable(
                        f"cannot connect to {config.url}: every request in the first "
                        "second was refused or failed to connect "
                        "(is nginx running? try `smart-tui lab start`)"
                    )
                return collector.result(body, pid)


def probe_command(args: argparse.Namespace) -> int:
    """``smart-tui probe URL --rate RPS --duration S [--connections N] [--json]``.

    Expects ``url``, ``rate``, ``duration`` and optionally ``connections``,
    ``timeout``, ``warmup``, ``poisson``, ``header`` (list of "Name: value") and
    ``json`` on the namespace. Prints a summary; returns an exit code."""
    headers: dict[str, str] = {}
    for item in getattr(args, "header", None) or []:
        name, _, value = item.partition(":")
        headers[name.strip()] = value.strip()
    config = ProbeConfig(
        url=args.url,
        rate_rps=float(args.rate),
        duration_s=float(args.duration),
        connections=int(getattr(args, "connections", None) or 16),
        timeout_s=float(getattr(args, "timeout", None) or 2.0),
        warmup_s=float(getattr(args, "warmup", None) or 0.0),
        poisson=bool(getattr(args, "poisson", False)),
        headers=headers,
    )
    result = run_probe(config)
    if getattr(args, "json", False):
        print(json.dumps(result.summary(), indent=2, default=_json_default))
    else:
        print(format_summary(result))
    return int(ExitCode.OK)


def _json_default(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON serialisable: {value!r}")
