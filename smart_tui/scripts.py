"""Running an experiment's shell commands and controlling nginx.

Every command runs in its own process group with a timeout, so a hung script is
killed whole; its output goes line by line to the run's log. Failures come back as
``ScriptResult`` values: the runner decides what a failure means."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("smart_tui.scripts")

# Enough to see why a script failed, without flooding the log.
_OUTPUT_TAIL_LINES = 40


@dataclass(frozen=True)
class ScriptResult:
    """How one command ended."""

    command: str
    returncode: int | None  # None when it timed out and was killed
    output: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        """One line: what ran and how it ended, with its last output line."""
        if self.timed_out:
            ending = "timed out and was killed"
        else:
            ending = f"exited {self.returncode}"
        last = self.output.strip().splitlines()[-1:] or [""]
        tail = f": {last[0][:400]}" if last[0] else ""
        return f"`{self.command}` {ending}{tail}"


def run_command(
    command: str | list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
) -> ScriptResult:
    """Run ``command`` (a ``bash -c`` string or an argv list) and capture its output."""
    argv = ["bash", "-c", command] if isinstance(command, str) else command
    shown = command if isinstance(command, str) else shlex.join(command)
    log.info("run: %s", shown)
    # Output goes to a file, not a pipe: a script that leaves a daemon behind
    # (which inherits the pipe) must count as finished when the script exits.
    with tempfile.TemporaryFile() as output_file:
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=output_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return ScriptResult(shown, 127, f"cannot start: {exc.strerror}")

        timed_out = False
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process)
            process.wait()
        except BaseException:
            # Interrupted (a signal turned into an exception): leave no script.
            _kill_group(process)
            process.wait()
            raise
        output_file.seek(0)
        output = output_file.read().decode("utf-8", "replace")
    if timed_out:
        output += (
            f"\n(killed after {timeout_s:g} s; raise SCRIPT_TIMEOUT_SECONDS in "
            "smart.conf if the script needs longer)"
        )

    for line in output.splitlines()[-_OUTPUT_TAIL_LINES:]:
        log.info("  | %s", line)
    returncode = None if timed_out else process.returncode
    result = ScriptResult(shown, returncode, output, timed_out)
    if not result.ok:
        log.warning("%s", result.describe())
    return result


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def never_prompt(argv: list[str]) -> list[str]:
    """``argv`` with ``-n`` after a leading ``sudo`` that lacks it. A password prompt
    would hang an unattended run until its timeout; with ``-n`` sudo fails at once
    and says why. A second ``-n`` is harmless, so only the exact flag is looked for."""
    if not argv or Path(argv[0]).name != "sudo":
        return argv
    options = []
    for word in argv[1:]:
        if not word.startswith("-"):
            break
        options.append(word)
    if "-n" in options or "--non-interactive" in options:
        return argv
    return [argv[0], "-n", *argv[1:]]


@dataclass(frozen=True)
class Nginx:
    """The nginx an experiment changes: its main config and the command to run it.
    With a root ``helper`` (ROOT_HELPER_CMD), tests and reloads go through it."""

    conf: Path
    command: list[str]
    helper: tuple[str, ...] = ()

    def _run(self, args: list[str], action: str, timeout_s: float) -> ScriptResult:
        argv = [*self.helper, action] if self.helper else [*self.command, *args]
        # cwd "/": a helper run through sudo may not be able to enter conf's folder.
        cwd = Path("/") if self.helper else self.conf.parent
        return run_command(argv, cwd=cwd, env={}, timeout_s=timeout_s)

    def test(self, timeout_s: float = 30.0) -> ScriptResult:
        return self._run(["-t"], "test", timeout_s)

    def reload(self, timeout_s: float = 30.0) -> ScriptResult:
        return self._run(["-s", "reload"], "reload", timeout_s)
