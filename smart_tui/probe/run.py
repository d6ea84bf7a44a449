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
from smart_tui.probe.collect import Collector
from smart_tui.probe.engine import FRAME_HEADER
from smart_tui.probe.model import (
    ProbeConfig,
    ProbeResult,
    SecondStats,
    format_summary,
)

SamplesCallback = Callable[
    [
        SecondStats,
        npt.NDArray[np.float64],
        npt.NDArray[np.float64],
        npt.NDArray[np.int16],
    ],
    None,
]
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
    collector = Collector(config)
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
                stats = collector.add_frame(body)
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
                return collector.result(
                    stopped_early=bool(body.get("stopped_early")),
                    scheduler=str(body.get("scheduler", "")),
                    pid=pid,
                )


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
