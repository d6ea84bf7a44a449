"""Byte-exact snapshots of the files an experiment may touch.

Taken before any change; used to prove an apply changed something, to prove a revert
put every byte back, and to restore the files when it did not. A copy is also written
to the run's folder so the evidence outlives the process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smart_tui.atomic import write_atomically

INDEX_NAME = "INDEX"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Snapshot:
    """The bytes (or absence) of each file at one moment."""

    files: dict[Path, bytes | None]
    modes: dict[Path, int]

    @classmethod
    def take(cls, paths: list[Path]) -> Snapshot:
        files = {path: _read(path) for path in paths}
        modes = {
            path: path.stat().st_mode & 0o7777
            for path, data in files.items()
            if data is not None
        }
        return cls(files=files, modes=modes)

    def changed(self) -> list[Path]:
        """The files whose bytes differ from the snapshot now."""
        return [path for path, data in self.files.items() if _read(path) != data]

    def restore(self) -> list[Path]:
        """Put every changed file back; returns the files it rewrote or removed."""
        restored = self.changed()
        for path in restored:
            data = self.files[path]
            if data is None:
                path.unlink(missing_ok=True)
            else:
                write_atomically(path, data, mode=self.modes.get(path, 0o644))
        return restored

    def save(self, folder: Path) -> None:
        """Write the snapshot under ``folder`` (the run's directory), durably: a
        recovery after a power cut reads it back with ``load``."""
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for index, (path, data) in enumerate(self.files.items()):
            name = f"{index:02d}_{path.name}"
            if data is not None:
                write_atomically(folder / name, data, mode=0o600)
            mode = self.modes.get(path)
            state = "absent" if data is None else f"{mode:o}"
            lines.append(f"{name}\t{state}\t{path}")
        write_atomically(folder / INDEX_NAME, "\n".join(lines) + "\n", mode=0o600)

    @classmethod
    def load(cls, folder: Path) -> Snapshot:
        """Read back a snapshot written by ``save``."""
        files: dict[Path, bytes | None] = {}
        modes: dict[Path, int] = {}
        index_text = (folder / INDEX_NAME).read_text(encoding="utf-8")
        for line in index_text.splitlines():
            name, state, original = line.split("\t", 2)
            path = Path(original)
            if state == "absent":
                files[path] = None
            else:
                files[path] = (folder / name).read_bytes()
                modes[path] = int(state, 8)
        return cls(files=files, modes=modes)
