"""Who changes the server: this process, or ``smart-tui-root`` through sudo.

With ``ROOT_HELPER_CMD`` empty, experiment scripts run as this user and a snapshot is
restored by writing the files directly (the lab, or a config this user may write).
With it set, every change goes through the root helper, which keeps its own copy of
the files (see ``smart_tui.root_helper``); this process only reads them to prove a
change happened and was undone."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from smart_tui.errors import ConfigError, ExitCode, RevertFailed
from smart_tui.experiments import Experiment, Variant
from smart_tui.scripts import ScriptResult, never_prompt, run_command
from smart_tui.snapshot import Snapshot

log = logging.getLogger("smart_tui.hands")

# The helper's own refusals, as opposed to a script or nginx that failed.
_REFUSED = {ExitCode.USAGE, ExitCode.BAD_CONFIG, ExitCode.BAD_EXPERIMENT}
# Python's start and the trust checks come on top of the script's own time.
_HELPER_SLACK_S = 30.0


def helper_argv(command: str) -> tuple[str, ...]:
    """ROOT_HELPER_CMD as words, with ``sudo -n`` so it never waits for a password."""
    return tuple(never_prompt(shlex.split(command))) if command else ()


@dataclass(frozen=True)
class Hands:
    """Runs apply/revert commands and restores snapshots, as this user or as root."""

    helper: tuple[str, ...] = ()
    timeout_s: float = 120.0

    def _call(self, *args: str) -> ScriptResult:
        result = run_command(
            [*self.helper, *args],
            cwd=Path("/"),
            env={},
            timeout_s=self.timeout_s + _HELPER_SLACK_S,
        )
        last = (result.output.strip().splitlines() or [""])[-1]
        if result.returncode in _REFUSED:
            # "smart-tui-root: bad config: <why>": keep the why.
            prefixed = last.startswith("smart-tui-root:")
            why = last.split(": ", 2)[-1] if prefixed else last
            raise ConfigError(f"the root helper refused `{args[0]}`: {why}")
        if result.returncode == 127 or (
            result.returncode == 1 and last.startswith("sudo:")
        ):
            raise ConfigError(
                f"cannot run the root helper ({last}): sudo allows only the exact "
                "command of /etc/sudoers.d/smart, so ROOT_HELPER_CMD in smart.conf "
                "must match it (`sudo -l` lists it; deploy/install.sh writes both)"
            )
        return result

    def begin(self, run_id: str, experiment: Experiment) -> None:
        """Before the first change: the helper copies the files it may restore."""
        if not self.helper:
            return
        result = self._call("begin", run_id, experiment.id)
        if not result.ok:
            raise ConfigError(
                f"the root helper could not snapshot the files of {experiment.id}: "
                f"{result.describe()}"
            )

    def script(
        self,
        experiment: Experiment,
        variant: Variant,
        *,
        revert: bool,
        run_id: str,
        env: Mapping[str, str],
    ) -> ScriptResult:
        """Run ``variant``'s apply command, or the experiment's revert."""
        if self.helper:
            action = "revert" if revert else "apply"
            return self._call(action, run_id, experiment.id, variant.name)
        command = experiment.meta.revert if revert else variant.apply
        return run_command(
            command, cwd=experiment.path, env=env, timeout_s=self.timeout_s
        )

    def restore(self, snapshot: Snapshot, run_id: str) -> list[Path]:
        """Put the snapshot's bytes back; returns the files that differed. Through
        the helper, root writes its own copy, which must then equal this one."""
        if not self.helper:
            return snapshot.restore()
        differed = snapshot.changed()
        result = self._call("restore", run_id)
        if not result.ok:
            raise RevertFailed(
                f"the root helper could not restore: {result.describe()}"
            )
        left = snapshot.changed()
        if left:
            # Root's copy is the authority; this one sits in a folder this user
            # writes. They differ only when a recheck was cut short between going
            # back to the baseline and saving the new snapshot.
            names = ", ".join(str(path) for path in left)
            log.warning("root's copy of %s differs from the run's snapshot", names)
        return differed
