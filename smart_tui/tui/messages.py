"""Typed messages a run's thread posts to the app. ``post_message`` is thread-safe;
the handlers on the app own every piece of state, so no widget or reactive is ever
touched from the run's thread."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class PhaseBegan(Message):
    def __init__(self, name: str, variant: str, duration_s: float) -> None:
        super().__init__()
        self.name, self.variant, self.duration_s = name, variant, duration_s


class SecondMeasured(Message):
    def __init__(self, role: str, variant: str, stats: dict[str, Any]) -> None:
        super().__init__()
        self.role, self.variant, self.stats = role, variant, stats


class VariantDecided(Message):
    def __init__(self, variant: str, decision: str, reasons: list[str]) -> None:
        super().__init__()
        self.variant, self.decision, self.reasons = variant, decision, reasons


class RunEnded(Message):
    """A run finished, failed or was refused; ``error`` is None on success."""

    def __init__(
        self, experiment_id: str, summary: str, error: str | None = None
    ) -> None:
        super().__init__()
        self.experiment_id, self.summary, self.error = experiment_id, summary, error


class ApprovalDone(Message):
    """An approve or override finished; ``error`` is None on success."""

    def __init__(self, summary: str, error: str | None = None) -> None:
        super().__init__()
        self.summary, self.error = summary, error
