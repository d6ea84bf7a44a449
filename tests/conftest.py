"""Shared fixtures. ``lab`` is a started lab in ``tmp_path / "var"`` (its ``LabInfo``);
``lab_factory`` hands out more ``Lab`` objects. Every lab a fixture handed out is
stopped afterwards, even when the test failed, so no nginx outlives the suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smart_tui.lab import Lab, LabInfo


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Callable[[Path | None], Lab]]:
    """``lab_factory(var_dir=None)`` returns a ``Lab`` (not started) to be stopped
    at teardown; ``None`` means ``tmp_path / "var"``."""
    made: list[Lab] = []

    def make(var_dir: Path | None = None) -> Lab:
        lab = Lab(var_dir or tmp_path / "var")
        made.append(lab)
        return lab

    yield make
    for lab in made:
        lab.stop()


@pytest.fixture
def lab(lab_factory: Callable[[Path | None], Lab]) -> LabInfo:
    return lab_factory(None).start()
