"""What the app and a run's thread share: a stop request and a done signal. Kept
apart from ``runs`` so the app starts without importing the runner's statistics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class RunControl:
    """Shared between the app and one run's thread: ``stop`` asks the run to revert
    and end; ``done`` is set once the thread has let go of nginx and the lock."""

    experiment_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
