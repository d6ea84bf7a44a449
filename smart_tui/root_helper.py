"""``smart-tui-root``: the few things a run needs root for, done only with files root
owns.

On a server the service runs as an unprivileged user while the nginx config belongs
to root. The service calls this helper through sudo (``ROOT_HELPER_CMD`` in
smart.conf; the sudoers rule pins the config path)::

    smart-tui-root CONFIG check
    smart-tui-root CONFIG begin RUN_ID EXPERIMENT
    smart-tui-root CONFIG apply RUN_ID EXPERIMENT VARIANT
    smart-tui-root CONFIG revert RUN_ID EXPERIMENT VARIANT
    smart-tui-root CONFIG restore RUN_ID
    smart-tui-root CONFIG test | reload

Nothing the caller controls decides what root writes. The caller names a run, an
experiment and a variant; the helper reads which file to edit (NGINX_CONF), how to
run nginx (NGINX_CMD) and what each variant runs (meta.json) from files that it first
proves belong to root and that no one else may write, along with every folder above
them and the files it changes. Its environment is replaced, and signals from the
caller do not stop it. ``begin`` copies the watched files into ``root-state/`` beside
the config (root's, mode 0700); ``restore`` writes back only those copies, only to
the paths recorded there, and only over bytes the helper itself left: a hand edit
made since is never undone. The service can move nginx between configs root
installed, never to bytes of its own choosing.

Exit status: 0 done; 2 usage; 3 refused (an untrusted file, a bad config); 4 unknown
or broken experiment; 5 an apply, test or reload failed; 6 a revert or restore failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import shlex
import shutil
import signal
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smart_tui import experiments
from smart_tui.config import load_settings
from smart_tui.errors import (
    ApplyFailed,
    ConfigError,
    ExitCode,
    RevertFailed,
    SmartError,
    UsageError,
)
from smart_tui.experiments import Experiment
from smart_tui.root_state import Ledger, digests
from smart_tui.scripts import ScriptResult, run_command
from smart_tui.settings import Settings
from smart_tui.snapshot import Snapshot
from smart_tui.trust import (
    owned_by_root,
    require_trusted,
    require_trusted_file,
    require_trusted_tree,
)

STATE_DIR = "root-state"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USAGE = (
    "smart-tui-root CONFIG check | begin RUN EXPERIMENT | "
    "apply RUN EXPERIMENT VARIANT | revert RUN EXPERIMENT VARIANT | restore RUN | "
    "test | reload"
)
_ARITY = {
    "check": 0,
    "begin": 2,
    "apply": 3,
    "revert": 3,
    "restore": 1,
    "test": 0,
    "reload": 0,
}


def _own_code(*, deep: bool) -> None:
    """This helper's code and interpreter: a service that could edit them would
    choose what runs as root."""
    require_trusted(Path(sys.executable), "the helper's python")
    require_trusted_tree(Path(__file__).parent, "the helper's code")
    for entry in sys.path:
        if entry and Path(entry).is_dir():
            if deep and entry.endswith("-packages"):
                require_trusted_tree(Path(entry), "the helper's libraries")
            else:
                require_trusted(Path(entry), "the helper's libraries")


# --- the helper -------------------------------------------------------------------


@dataclass(frozen=True)
class Helper:
    """The trusted settings and the folder of root's snapshots."""

    config: Path
    settings: Settings
    ledger: Ledger

    @classmethod
    def open(cls, config_arg: str) -> Helper:
        config = Path(config_arg)
        if not config.is_absolute():
            raise UsageError(f"CONFIG must be an absolute path, got {config_arg!r}")
        config = require_trusted(config, "the config file")
        # File only: whatever the caller's environment says is not root's word.
        settings = load_settings(config, environ={})
        missing = [
            key
            for key, value in (
                ("NGINX_CONF", settings.nginx_conf),
                ("NGINX_CMD", settings.nginx_cmd),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"{config}: {' and '.join(missing)} must be set for the root helper "
                "(it never acts on the lab), e.g. NGINX_CONF=/etc/nginx/nginx.conf "
                "NGINX_CMD=/usr/sbin/nginx"
            )
        # Root reads, tests and reloads this file: its bytes must be root's choice.
        require_trusted_file(
            settings.nginx_conf_path or Path(settings.nginx_conf), "NGINX_CONF"
        )
        state = config.parent / STATE_DIR
        with contextlib.suppress(FileExistsError):
            state.mkdir(mode=0o700)
        info = owned_by_root(state, "the root state folder", sticky_ok=False)
        if not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigError(
                f"{state} must be a folder only root can enter (mode 0700): "
                f"chmod 700 {shlex.quote(str(state))}"
            )
        return cls(config=config, settings=settings, ledger=Ledger(state))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One action at a time: a snapshot is never read while it is rewritten."""
        deadline = time.monotonic() + self.settings.script_timeout_seconds + 30
        with (self.ledger.folder / ".lock").open("a+") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "?"
                        raise ConfigError(
                            f"another smart-tui-root (pid {holder}) has held "
                            f"{handle.name} too long; if it was stopped, "
                            f"kill -CONT {holder} or kill it"
                        ) from None
                    time.sleep(0.2)
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield

    @property
    def nginx_conf(self) -> Path:
        return self.settings.nginx_conf_path or Path(self.settings.nginx_conf)

    def watched(self, experiment: Experiment) -> list[Path]:
        """The files root may change for ``experiment``, each proven root's alone
        with every folder above it: in a folder the service user could write, it
        could swap the file for a link between a snapshot and its restore."""
        paths = experiment.watched(self.nginx_conf)
        for path in paths:
            require_trusted_file(path, f"{experiment.id}'s file")
        return paths

    def nginx_argv(self) -> list[str]:
        argv = shlex.split(self.settings.nginx_cmd)
        found = shutil.which(argv[0], path=SAFE_PATH)
        if found is None:
            raise ConfigError(
                f"{self.config}: NGINX_CMD {argv[0]!r} is not an executable on "
                f"{SAFE_PATH}; give its full path"
            )
        binary = require_trusted(Path(found), "NGINX_CMD")
        return [str(binary), *argv[1:]]

    def experiment(self, experiment_id: str) -> Experiment:
        folder = self.settings.experiments_path
        require_trusted_tree(folder, "the experiments folder")
        return experiments.find(folder, experiment_id)

    # Actions

    def check(self) -> list[str]:
        _own_code(deep=True)
        require_trusted_tree(self.settings.experiments_path, "the experiments folder")
        nginx = self.nginx_argv()
        found = experiments.discover(self.settings.experiments_path)
        return [
            f"config {self.config}: root's alone",
            f"experiments {self.settings.experiments_path}: root's alone, "
            f"{len(found)} found",
            f"helper code and libraries under {sys.prefix}: root's alone",
            f"nginx {nginx[0]}: root's alone; edits {self.nginx_conf}",
        ]

    def begin(self, run_id: str, experiment_id: str) -> list[Path]:
        """Copy the files the run may change; a second ``begin`` for the same run
        (a recheck that first went back to the baseline) copies them afresh."""
        experiment = self.experiment(experiment_id)
        return list(self.ledger.begin(run_id, self.watched(experiment)).files)

    def run_script(
        self, run_id: str, experiment_id: str, variant_name: str, *, revert: bool
    ) -> ScriptResult:
        self.ledger.begun(run_id)
        experiment = self.experiment(experiment_id)
        variant = experiment.variant(variant_name)
        paths = self.watched(experiment)
        failed = RevertFailed if revert else ApplyFailed
        self.ledger.require_as_left(run_id, paths, failed, first_change=revert)
        env = {
            "SMART_NGINX_CONF": str(self.nginx_conf),
            "SMART_NGINX": shlex.join(self.nginx_argv()),
            "SMART_VARIANT": variant.name,
            "SMART_RUN_ID": run_id,
        }
        if self.settings.target_url:
            env["SMART_TARGET_URL"] = experiment.resolve_url(self.settings.target_url)
        undo_of_this_run = revert and self.ledger.applied(run_id)
        before = digests(paths)
        self.ledger.busy(run_id)
        try:
            result = run_command(
                experiment.meta.revert if revert else variant.apply,
                cwd=experiment.path,
                env=env,
                timeout_s=self.settings.script_timeout_seconds,
            )
            if undo_of_this_run:
                self._back_to_begin(run_id, result)
            return result
        finally:
            self.ledger.changed(run_id, before, paths, applied=not revert)

    def _back_to_begin(self, run_id: str, result: ScriptResult) -> None:
        """A revert after this run's apply must land on the run's snapshot; where the
        script put other bytes there (a stale backup), root's snapshot does."""
        snapshot = self.ledger.snapshot(run_id)
        wrong = snapshot.restore()
        if wrong:
            names = ", ".join(str(path) for path in wrong)
            # The script reloaded nginx with its bytes: load the snapshot's.
            self.nginx("-s", "reload")
            raise RevertFailed(
                f"`{result.command}` left {names} unlike the run's snapshot; the "
                "snapshot was put back: fix the revert script"
            )

    def restore(self, run_id: str) -> list[Path]:
        snapshot = Snapshot.load(self.ledger.begun(run_id))
        paths = list(snapshot.files)
        for path in paths:
            require_trusted_file(path, "a snapshot's file")
        self.ledger.require_as_left(run_id, paths, RevertFailed)
        before = digests(paths)
        restored = snapshot.restore()
        self.ledger.changed(run_id, before, paths, applied=False)
        return restored

    def nginx(self, *args: str) -> ScriptResult:
        return run_command(
            [*self.nginx_argv(), *args],
            cwd=self.nginx_conf.parent,
            env={},
            timeout_s=self.settings.script_timeout_seconds,
        )


def _clean_process() -> None:
    """Nothing inherited from the caller shapes what root runs."""
    os.environ.clear()
    os.environ.update(PATH=SAFE_PATH, LANG="C.UTF-8", HOME="/root")
    os.umask(0o022)
    os.chdir("/")
    # The caller may signal sudo, which passes signals on: a change must not be cut
    # short by the user it protects against. Handlers (not SIG_IGN) so the scripts
    # still start with the default dispositions.
    for number in _CALLER_SIGNALS:
        signal.signal(number, _ignore)
    _lift_limits()


# Limits pass through sudo too: a small RLIMIT_FSIZE would cut a backup short, and
# RLIMIT_CPU or NOFILE kill a script half-way. A soft limit is raised to its hard
# one; a hard limit below what root needs (only root could raise it, and root may
# lack CAP_SYS_RESOURCE in a container) is refused.
_INFINITY = resource.RLIM_INFINITY
_NEEDED = {
    "RLIMIT_FSIZE": _INFINITY,
    "RLIMIT_CPU": _INFINITY,
    "RLIMIT_AS": _INFINITY,
    "RLIMIT_DATA": _INFINITY,
    "RLIMIT_NOFILE": 1024,
    "RLIMIT_NPROC": 256,
    "RLIMIT_STACK": 8 << 20,
}


def _lift_limits() -> None:
    for name, needed in _NEEDED.items():
        limit = getattr(resource, name)
        soft, hard = resource.getrlimit(limit)
        if hard != _INFINITY and (needed == _INFINITY or hard < needed):
            try:
                resource.setrlimit(limit, (needed, needed))
            except (ValueError, OSError):
                raise UsageError(
                    f"{name} is limited to {hard} by the caller (`ulimit`) and "
                    "root may not raise it here; the root helper will not run "
                    "under a limit it did not choose"
                ) from None
            continue
        # The stack keeps a finite soft limit, as a login shell would have it.
        if name == "RLIMIT_STACK":
            resource.setrlimit(limit, (max(soft, needed), hard))
        else:
            resource.setrlimit(limit, (hard, hard))


_CALLER_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGXCPU,
    signal.SIGXFSZ,
)


def _ignore(number: int, frame: object) -> None:
    """Root decides when the helper stops; the calling user does not."""


def _report(result: ScriptResult, failed: type[SmartError]) -> None:
    sys.stdout.write(result.output)
    if not result.output.endswith("\n") and result.output:
        sys.stdout.write("\n")
    if not result.ok:
        raise failed(result.describe())


def _act(helper: Helper, action: str, args: list[str]) -> None:
    if action == "check":
        for line in helper.check():
            print(f"ok: {line}")
        _report(helper.nginx("-t"), ApplyFailed)
    elif action == "begin":
        for path in helper.begin(*args):
            print(f"snapshot: {path}")
    elif action in ("apply", "revert"):
        result = helper.run_script(*args, revert=action == "revert")
        _report(result, RevertFailed if action == "revert" else ApplyFailed)
    elif action == "restore":
        for path in helper.restore(*args):
            print(f"restored: {path}")
    elif action == "test":
        _report(helper.nginx("-t"), ApplyFailed)
    else:
        _report(helper.nginx("-s", "reload"), ApplyFailed)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    try:
        if len(words) < 2 or words[1] not in _ARITY:
            raise UsageError(USAGE)
        config, action, *args = words
        if len(args) != _ARITY[action]:
            raise UsageError(f"{action} takes {_ARITY[action]} argument(s); {USAGE}")
        if os.geteuid() != 0:
            raise UsageError(
                "smart-tui-root must run as root, through sudo: set ROOT_HELPER_CMD "
                "to 'sudo -n <venv>/bin/smart-tui-root <smart.conf>'"
            )
        _clean_process()
        helper = Helper.open(config)
        if action != "check":
            _own_code(deep=False)
        with helper.locked():
            _act(helper, action, args)
    except SmartError as exc:
        print(f"smart-tui-root: {exc.title}: {exc.message}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except OSError as exc:
        print(f"smart-tui-root: error: {exc}", file=sys.stderr)
        return int(ExitCode.INTERNAL)
    return int(ExitCode.OK)
