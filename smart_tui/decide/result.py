"""Result types of the decision functions: frozen, readable as mappings, and
convertible to plain JSON-ready dicts for storage."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

VERDICTS = ("KEEP", "REVERT", "INCONCLUSIVE", "CONTINUE")


def _plain(value: Any) -> Any:
    """Turn numpy scalars, NaN/inf and nested results into JSON-safe values."""
    if isinstance(value, _FieldMapping):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        # sqlite stores the JSON text; NaN is not valid JSON, so it becomes null.
        return value if math.isfinite(value) else None
    return value


class _FieldMapping(Mapping[str, Any]):
    """Mapping view over a dataclass's fields, so ``result["decision"]`` works."""

    __slots__ = ()

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of plain values (``json.dumps`` accepts it)."""
        return {name: _plain(getattr(self, name)) for name in self._names()}


@dataclass(frozen=True, eq=True)
class Effect(_FieldMapping):
    """Estimated p50 ratio variant/baseline and its confidence interval.

    ``low``/``high`` are None when there is no interval (seed rule, or too little
    data); ``confidence`` is the two-sided level of that interval."""

    ratio: float | None
    low: float | None = None
    high: float | None = None
    confidence: float | None = None


@dataclass(frozen=True, eq=True)
class Decision(_FieldMapping):
    """What ``decide``/``seed_rule``/``guardrail`` concluded, with the numbers."""

    decision: str
    effect: Effect
    confidence: float | None
    samples_used: int
    reasons: list[str] = field(default_factory=list)
    policy: str = "stats"
    baseline_samples: int = 0
    # Information fraction of a sequential look (variant samples / max), else None.
    look_fraction: float | None = None
    baseline_p50_ms: float | None = None
    baseline_p95_ms: float | None = None
    baseline_p99_ms: float | None = None
    variant_p50_ms: float | None = None
    variant_p95_ms: float | None = None
    variant_p99_ms: float | None = None
    baseline_5xx_pct: float | None = None
    variant_5xx_pct: float | None = None
    err_delta_pct: float | None = None
    err_delta_low_pct: float | None = None
    err_delta_high_pct: float | None = None
    # One-sided p-value of "the p50 gain does not reach improve_pct".
    p_value: float | None = None
    drift_pct_per_min: float | None = None
    needed_samples: int | None = None
    needed_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.decision not in VERDICTS:
            raise ValueError(
                f"decision must be one of {VERDICTS}, not {self.decision!r}"
            )

    __hash__ = None  # type: ignore[assignment]  # holds a list, so not hashable


@dataclass(frozen=True, eq=True)
class WindowPlan(_FieldMapping):
    """How long each measuring window must be, from an A/A calibration run."""

    samples_per_arm: int
    seconds_per_arm: float | None
    power: float
    improve_pct: float
    expected_improve_pct: float
    aa_effect: Effect
    aa_samples: int
    reasons: list[str] = field(default_factory=list)

    __hash__ = None  # type: ignore[assignment]
