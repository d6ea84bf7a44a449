"""Running an experiment from the app: the body of the thread worker.

Takes the host-wide run lock, runs the same ``run_experiment`` as ``--run-once`` and
reports through messages. Stopping sets the runner's stop event: the run reverts
within about a second and raises ``Interrupted``, as it does for a signal."""

from __future__ import annotations

from collections.abc import Callable

from textual.message import Message

from smart_tui.errors import Interrupted
from smart_tui.experiments import Experiment
from smart_tui.lock import RunLock
from smart_tui.probe import SecondStats
from smart_tui.runner import Observer, RunOutcome, run_experiment
from smart_tui.settings import Settings
from smart_tui.storage import Store
from smart_tui.tui.control import RunControl
from smart_tui.tui.messages import PhaseBegan, SecondMeasured, VariantDecided

Post = Callable[[Message], object]


class AppObserver(Observer):
    """Forwards the runner's progress as messages."""

    def __init__(self, post: Post) -> None:
        self.post = post

    def phase(self, name: str, variant: str | None, duration_s: float) -> None:
        self.post(PhaseBegan(name, variant or "", duration_s))

    def second(self, role: str, variant: str, stats: SecondStats) -> None:
        figures = stats.to_dict()
        figures.pop("hdr", None)  # large, and the screen never needs it
        self.post(SecondMeasured(role, variant, figures))

    def decided(self, variant: str, decision: str, reasons: list[str]) -> None:
        self.post(VariantDecided(variant, decision, reasons))


def run_from_app(
    settings: Settings, experiment: Experiment, control: RunControl, post: Post
) -> RunOutcome:
    """Run ``experiment`` under the run lock; raises ``LockHeld`` if it is taken."""
    try:
        purpose = f"a run of {experiment.id} started in the smart-tui app"
        with RunLock(settings.var_path / "run.lock", purpose):
            if control.stop.is_set():
                raise Interrupted("cancelled before it started")
            store = Store(settings.database_path)
            try:
                return run_experiment(
                    settings,
                    experiment,
                    store,
                    observer=AppObserver(post),
                    trigger="app",
                    stop=control.stop,
                )
            finally:
                store.close()
    finally:
        control.done.set()
