"""The open-loop HTTP load probe: ``run_probe(ProbeConfig(...)) -> ProbeResult``.

Requests leave at intended times (fixed or Poisson spacing) from a separate process,
and each latency is measured from its intended send time, so server stalls are never
hidden. Seconds the probe or host spoiled are flagged and left out of scoring."""

from smart_tui.probe.model import (
    STATUS_CONN_ERROR,
    STATUS_TIMEOUT,
    STATUS_UNSENT,
    USER_AGENT,
    ProbeConfig,
    ProbeResult,
    SecondStats,
    decode_reservoir,
    format_summary,
    merged_histogram,
)
from smart_tui.probe.run import probe_command, run_probe

__all__ = [
    "STATUS_CONN_ERROR",
    "STATUS_TIMEOUT",
    "STATUS_UNSENT",
    "USER_AGENT",
    "ProbeConfig",
    "ProbeResult",
    "SecondStats",
    "decode_reservoir",
    "format_summary",
    "merged_histogram",
    "probe_command",
    "run_probe",
]
