"""Notice when the measurement itself, not the server, was slow.

``LoopLagWatch`` records gaps in an event loop's responsiveness (SIGSTOP, swapping, CPU
starvation of the probe); ``HostReader`` turns ``/proc/stat`` steal and
``/proc/pressure/cpu`` into per-interval percentages. ``flag_reasons`` says why a second
should not be scored; figures a kernel does not offer are ``None`` and never flag."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

# A gap this long between two ticks of the probe's own loop means every request in
# flight was timed by a stopped clock-watcher; 50 ms is far above the ~1 ms timer
# jitter and the few ms a busy probe batch takes, and well below any stall we care to
# exclude.
DEFAULT_STALL_MS = 50.0
# Stolen time above this share means a hypervisor took the CPU away from us.
DEFAULT_STEAL_PCT = 10.0
# CPU pressure "some" above this share means runnable tasks (maybe the probe) queued
# for a CPU nearly all second; 40-80% is common when nginx, the probe and other work
# share a 2-core machine, and the probe's own lag figures catch what that costs us.
DEFAULT_CPU_PRESSURE_PCT = 90.0


@dataclass(frozen=True)
class HostSample:
    """Host CPU figures over one interval; ``None`` where the kernel has no figure."""

    steal_pct: float | None
    cpu_pressure_pct: float | None
    procs_running: int | None


@dataclass(frozen=True)
class Thresholds:
    """Limits above which a second is flagged and left out of scoring."""

    stall_ms: float = DEFAULT_STALL_MS
    steal_pct: float = DEFAULT_STEAL_PCT
    cpu_pressure_pct: float = DEFAULT_CPU_PRESSURE_PCT


class HostReader:
    """Reads cumulative counters from /proc and reports deltas since the last call."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self._stat_path = os.path.join(proc_root, "stat")
        self._psi_path = os.path.join(proc_root, "pressure", "cpu")
        self._last_cpu: tuple[int, int] | None = None  # (steal, total) jiffies
        self._last_psi: tuple[int, int] | None = None  # (some total us, monotonic ns)

    def sample(self) -> HostSample:
        """Figures since the previous call; the first call only primes the counters."""
        steal_pct: float | None = None
        running: int | None = None
        try:
            with open(self._stat_path, "rb") as f:
                text = f.read().decode("ascii", "replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            if line.startswith("cpu "):
                fields = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal [guest guest_nice];
                # guest time is already inside user, so it is left out of the total.
                steal = fields[7] if len(fields) > 7 else 0
                total = sum(fields[:8])
                if self._last_cpu is not None:
                    d_total = total - self._last_cpu[1]
                    if d_total > 0:
                        steal_pct = 100.0 * (steal - self._last_cpu[0]) / d_total
                self._last_cpu = (steal, total)
            elif line.startswith("procs_running "):
                running = int(line.split()[1])
        return HostSample(steal_pct, self._cpu_pressure(), running)

    def _cpu_pressure(self) -> float | None:
        try:
            with open(self._psi_path, "rb") as f:
                first = f.readline().decode("ascii", "replace")
        except OSError:
            return None
        now_ns = time.monotonic_ns()
        total_us = None
        for part in first.split():
            if part.startswith("total="):
                total_us = int(part[len("total=") :])
        if total_us is None:
            return None
        pct = None
        if self._last_psi is not None:
            d_wall_us = (now_ns - self._last_psi[1]) / 1000
            if d_wall_us > 0:
                pct = min(100.0, 100.0 * (total_us - self._last_psi[0]) / d_wall_us)
        self._last_psi = (total_us, now_ns)
        return pct


@dataclass(frozen=True)
class Stall:
    """The loop gave no sign of life from ``start_ns`` to ``end_ns`` (monotonic)."""

    start_ns: int
    end_ns: int

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / NS_PER_MS


@dataclass
class LoopLagWatch:
    """Tracks how late an event loop runs, relative to ``origin_ns``.

    Call ``observe()`` from any callback (it is one subtraction), and ``start()`` a
    periodic tick so gaps are seen even when nothing else runs. Lag of a second is the
    longest gap touching it minus the tick interval; gaps above the threshold are kept
    as ``Stall``s so the seconds around them can be excluded."""

    origin_ns: int
    interval_ms: float = 10.0
    stall_ms: float = DEFAULT_STALL_MS
    clock: Callable[[], int] = time.monotonic_ns
    stalls: list[Stall] = field(default_factory=list)
    _last_ns: int = 0
    _lag_ms_by_second: dict[int, float] = field(default_factory=dict)
    _handle: asyncio.TimerHandle | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        self._last_ns = self.clock()

    def observe(self, now_ns: int | None = None) -> None:
        now = self.clock() if now_ns is None else now_ns
        gap_ns = now - self._last_ns
        if gap_ns <= 0:
            return
        lag_ms = max(0.0, gap_ns / NS_PER_MS - self.interval_ms)
        if lag_ms > 0.0:
            first = (self._last_ns - self.origin_ns) // NS_PER_S
            last = (now - self.origin_ns) // NS_PER_S
            for second in range(first, last + 1):
                if lag_ms > self._lag_ms_by_second.get(second, 0.0):
                    self._lag_ms_by_second[second] = lag_ms
        if gap_ns / NS_PER_MS > self.stall_ms:
            self.stalls.append(Stall(self._last_ns, now))
        self._last_ns = now

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._last_ns = self.clock()
        self._tick()

    def _tick(self) -> None:
        self.observe()
        assert self._loop is not None
        self._handle = self._loop.call_later(self.interval_ms / 1000, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def lag_ms(self, second: int) -> float:
        """Largest lag seen in ``second`` (counted from ``origin_ns``)."""
        return self._lag_ms_by_second.get(second, 0.0)

    def stalls_touching(self, second: int, guard_ns: int) -> list[Stall]:
        """Stalls overlapping ``second`` widened by ``guard_ns`` on both sides, since
        requests sent just before a stall or queued during it are skewed too."""
        lo = self.origin_ns + second * NS_PER_S - guard_ns
        hi = self.origin_ns + (second + 1) * NS_PER_S + guard_ns
        return [s for s in self.stalls if s.start_ns < hi and s.end_ns > lo]

    def forget_before(self, second: int) -> None:
        """Drop per-second lag older than ``second`` so long runs stay small."""
        for key in [k for k in self._lag_ms_by_second if k < second]:
            del self._lag_ms_by_second[key]


def flag_reasons(
    stalls: list[Stall], host: HostSample | None, thresholds: Thresholds
) -> list[str]:
    """Why a second should be excluded from scoring; empty when it is fine."""
    reasons: list[str] = []
    if stalls:
        worst = max(s.duration_ms for s in stalls)
        reasons.append(f"probe stalled {worst:.0f} ms")
    if host is not None:
        if host.steal_pct is not None and host.steal_pct > thresholds.steal_pct:
            reasons.append(f"cpu steal {host.steal_pct:.0f}%")
        if (
            host.cpu_pressure_pct is not None
            and host.cpu_pressure_pct > thresholds.cpu_pressure_pct
        ):
            reasons.append(f"cpu pressure {host.cpu_pressure_pct:.0f}%")
    return reasons
