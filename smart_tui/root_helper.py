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
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from smart_tui import experiments
from smart_tui.atomic import write_atomically
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
from smart_tui.scripts import ScriptResult, run_command
from smart_tui.settings import Settings
from smart_tui.snapshot import Snapshot

STATE_DIR = "root-state"
# Snapshots of this many runs are kept, newest first; a run's own is all it needs.
KEEP_RUNS = 20
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
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


# --- trust ------------------------------------------------------------------------


def _owned_by_root(path: Path, what: str, *, sticky_ok: bool) -> os.stat_result:
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != 0:
        raise ConfigError(
            f"{what}: {path} belongs to uid {info.st_uid}, not root; the root "
            f"helper trusts only root's files: chown root {shlex.quote(str(path))}"
        )
    shared = mode & 0o022
    if shared and not (sticky_ok and stat.S_ISDIR(info.st_mode) and mode & 0o1000):
        raise ConfigError(
            f"{what}: {path} is writable by group or others (mode {mode:04o}); "
            f"the root helper refuses it: chmod go-w {shlex.quote(str(path))}"
        )
    return info


def require_trusted(path: Path, what: str) -> Path:
    """``path`` resolved, after proving it and every folder above it belong to root
    and are writable by root alone (a root-owned sticky folder such as /tmp may sit
    above it: nobody else can rename what root put there)."""
    try:
        real = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise ConfigError(f"{what}: {path} does not exist") from None
    _owned_by_root(real, what, sticky_ok=False)
    for folder in real.parents:
        _owned_by_root(folder, what, sticky_ok=True)
    return real


def require_trusted_tree(top: Path, what: str) -> None:
    """Every file, folder and link target under ``top`` is root's alone."""
    require_trusted(top, what)
    for folder, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = Path(folder) / name
            if path.is_symlink():
                require_trusted(path, what)
            else:
                _owned_by_root(path, what, sticky_ok=False)


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
    state: Path

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
        require_trusted(
            settings.nginx_conf_path or Path(settings.nginx_conf), "NGINX_CONF"
        )
        state = config.parent / STATE_DIR
        with contextlib.suppress(FileExistsError):
            state.mkdir(mode=0o700)
        info = _owned_by_root(state, "the root state folder", sticky_ok=False)
        if not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigError(
                f"{state} must be a folder only root can enter (mode 0700): "
                f"chmod 700 {shlex.quote(str(state))}"
            )
        return cls(config=config, settings=settings, state=state)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One action at a time: a snapshot is never read while it is rewritten."""
        with (self.state / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
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
            if path.exists() or path.is_symlink():
                require_trusted(path, f"{experiment.id}'s file")
            else:
                require_trusted(path.parent, f"{experiment.id}'s folder")
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

    def snapshot_dir(self, run_id: str) -> Path:
        if not _RUN_ID.fullmatch(run_id):
            raise UsageError(f"RUN {run_id!r} is not a run id")
        return self.state / run_id

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
        folder = self.snapshot_dir(run_id)
        experiment = self.experiment(experiment_id)
        snapshot = Snapshot.take(self.watched(experiment))
        shutil.rmtree(folder, ignore_errors=True)
        snapshot.save(folder)
        _write_left(folder, snapshot.files, busy=False)
        older = sorted(
            (path for path in self.state.iterdir() if path.is_dir() and path != folder),
            key=lambda path: path.stat().st_mtime,
            reverse=True,
        )
        for stale in older[KEEP_RUNS - 1 :]:
            shutil.rmtree(stale, ignore_errors=True)
        return list(snapshot.files)

    def _opened(self, run_id: str) -> Path:
        folder = self.snapshot_dir(run_id)
        if not (folder / "INDEX").is_file():
            raise UsageError(
                f"run {run_id} has no snapshot in {self.state}; `begin` comes first"
            )
        return folder

    def run_script(
        self, run_id: str, experiment_id: str, variant_name: str, *, revert: bool
    ) -> ScriptResult:
        folder = self._opened(run_id)
        experiment = self.experiment(experiment_id)
        variant = experiment.variant(variant_name)
        paths = self.watched(experiment)
        failed = RevertFailed if revert else ApplyFailed
        _require_as_left(folder, paths, failed)
        env = {
            "SMART_NGINX_CONF": str(self.nginx_conf),
            "SMART_NGINX": shlex.join(self.nginx_argv()),
            "SMART_VARIANT": variant.name,
            "SMART_RUN_ID": run_id,
        }
        if self.settings.target_url:
            env["SMART_TARGET_URL"] = experiment.resolve_url(self.settings.target_url)
        _write_left(folder, {path: None for path in paths}, busy=True)
        result = run_command(
            experiment.meta.revert if revert else variant.apply,
            cwd=experiment.path,
            env=env,
            timeout_s=self.settings.script_timeout_seconds,
        )
        _write_left(folder, _current(paths), busy=False)
        return result

    def restore(self, run_id: str) -> list[Path]:
        folder = self._opened(run_id)
        snapshot = Snapshot.load(folder)
        for path in snapshot.files:
            if path.exists() or path.is_symlink():
                require_trusted(path, "a snapshot's file")
            else:
                require_trusted(path.parent, "a snapshot's folder")
        _require_as_left(folder, list(snapshot.files), RevertFailed)
        restored = snapshot.restore()
        _write_left(folder, snapshot.files, busy=False)
        return restored

    def nginx(self, *args: str) -> ScriptResult:
        return run_command(
            [*self.nginx_argv(), *args],
            cwd=self.nginx_conf.parent,
            env={},
            timeout_s=self.settings.script_timeout_seconds,
        )


# --- what the helper left ------------------------------------------------------
# After each change the helper records the digest of every file it watches. It then
# refuses to revert or restore over bytes it did not leave there: otherwise a snapshot
# taken earlier could undo an edit root made by hand since. A change cut short (the
# helper killed by root, a power cut) leaves "busy", and the restore goes ahead.

LEFT_FILE = "LEFT"


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _current(paths: list[Path]) -> dict[Path, bytes | None]:
    return Snapshot.take(paths).files


def _write_left(
    folder: Path, files: Mapping[Path, bytes | None], *, busy: bool
) -> None:
    state = {"busy": busy, "files": {str(p): _digest(d) for p, d in files.items()}}
    write_atomically(folder / LEFT_FILE, json.dumps(state, indent=2), mode=0o600)


def _require_as_left(folder: Path, paths: list[Path], failed: type[SmartError]) -> None:
    try:
        left = json.loads((folder / LEFT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise failed(f"{folder / LEFT_FILE} is missing or unreadable") from None
    if left["busy"]:
        return
    now = {str(p): _digest(d) for p, d in _current(paths).items()}
    changed = sorted(path for path in now if now[path] != left["files"].get(path))
    if changed:
        raise failed(
            f"{', '.join(changed)} changed outside smart-tui since the root helper's "
            "last change; it will not write over that edit: check the file by hand, "
            "then start a new run"
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


_CALLER_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
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
