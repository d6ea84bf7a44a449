"""Every core module imports with Textual made unimportable: the engine, storage,
statistics, dashboard and approvals know nothing of the UI."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import smart_tui

CHECK = """
import importlib, sys

class BlockTextual:
    def find_spec(self, name, path=None, target=None):
        if name == "textual" or name.startswith("textual."):
            raise ImportError(f"core module imported {name}")
        return None

sys.meta_path.insert(0, BlockTextual())
for name in sys.argv[1:]:
    importlib.import_module(name)
print("ok", len(sys.argv) - 1)
"""


def core_modules() -> list[str]:
    root = Path(smart_tui.__file__).parent
    names = [
        info.name
        for info in pkgutil.walk_packages([str(root)], prefix="smart_tui.")
        # __main__ modules run the CLI when imported; what they import is covered.
        if not info.name.startswith("smart_tui.tui")
        and not info.name.endswith("__main__")
    ]
    return sorted(names)


def test_core_modules_import_without_textual() -> None:
    modules = core_modules()
    assert "smart_tui.approvals" in modules and "smart_tui.runner" in modules

    done = subprocess.run(
        [sys.executable, "-c", CHECK, *modules],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ok {len(modules)}"


def test_the_blocker_catches_textual() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK, "smart_tui.tui"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "core module imported textual" in done.stderr
