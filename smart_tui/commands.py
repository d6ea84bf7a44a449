"""What each headless command does, over the core; the CLI only parses and maps
errors. Data goes to stdout, diagnostics to stderr."""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from smart_tui import experiments as experiments_mod
from smart_tui import journal, spool
from smart_tui import queue as queue_mod
from smart_tui.config import (
    describe,
    format_rows,
    load_settings,
    refuse_exposed_secrets,
)
from smart_tui.errors import (
    ConfigError,
    ExitCode,
    LockHeld,
    NothingToDo,
    OutputFailed,
    UsageError,
)
from smart_tui.experiments import BrokenExperiment, Experiment
from smart_tui.lock import RunLock
from smart_tui.settings import Settings
from smart_tui.storage import Store

if TYPE_CHECKING:
    from smart_tui.runner import RunOutcome

# The runner (scipy, ~0.7 s), aftermath (httpx, jinja2) and the lab are imported by
# the commands that use them, so `smart-tui` opens the app without loading them.


def settings_from(config: Path | None, overrides: Mapping[str, str]) -> Settings:
    settings = load_settings(config_path=config, overrides=overrides)
    refuse_exposed_secrets(settings)
    return settings


def refuse_foreign_state(settings: Settings) -> None:
    """As root, act only on files root alone can change: a config, experiment,
    journal, snapshot or lab state another user could write would tell root what
    to restore and run."""
    if os.geteuid() != 0:
        return
    from smart_tui.trust import require_trusted, require_trusted_tree

    places = [
        (settings.experiments_path, "the experiments folder"),
        (settings.var_path, "var/"),
        (settings.database_path.parent, "the database folder"),
    ]
    try:
        if settings.config_file is not None:
            require_trusted(settings.config_file, "the config file")
        for path, what in places:
            if path.exists():
                require_trusted_tree(path, what)
            else:  # root will create it: the folder above must be root's
                parent = next(p for p in path.parents if p.exists())
                require_trusted(parent, what)
    except ConfigError as exc:
        owner = _owner_name(settings.var_path)
        also = f"; or run smart-tui as {owner}: sudo -u {owner} smart-tui ..."
        raise UsageError(exc.message + (also if owner else "")) from None


def _owner_name(path: Path) -> str | None:
    """The user owning ``path``, unless it is root or missing."""
    try:
        uid = path.stat().st_uid
    except OSError:
        return None
    if uid == 0:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def recover_on_start(settings: Settings) -> None:
    """Every command first puts back a run whose process died (kill -9, power
    loss). A run still alive holds the lock and is left alone."""
    try:
        recovery = journal.recover(settings.var_path, settings.database_path)
    except LockHeld:
        return
    if recovery is not None:
        print(f"smart-tui: {recovery.describe()}", file=sys.stderr)
        _announce(settings, recovery)
    # Then what a run could not write to the database when it failed.
    for imported in spool.import_pending(settings.var_path, settings.database_path):
        print(f"smart-tui: {imported.describe()}", file=sys.stderr)


def _announce(settings: Settings, recovery: journal.Recovery) -> None:
    from smart_tui import aftermath

    aftermath.notify(
        settings,
        "crash-recovery",
        recovery.describe(),
        recovery.run_id,
        recovery.experiment_id,
    )


def doctor(config: Path | None, overrides: Mapping[str, str]) -> int:
    """Diagnose without changing anything: no recovery, no spool import, and a
    config file that exposes secrets is reported rather than refused."""
    from smart_tui.doctor import diagnose

    settings = load_settings(config_path=config, overrides=overrides)
    # The lab's state in var/ names commands doctor runs: root must own it.
    refuse_foreign_state(settings)
    checks = diagnose(settings)
    for check in checks:
        print(check.line())
    failed = sum(check.status == "FAIL" for check in checks)
    if failed:
        print(f"smart-tui: doctor: {failed} check(s) failed", file=sys.stderr)
        return int(ExitCode.CHECKS_FAILED)
    return int(ExitCode.OK)


def recover(settings: Settings) -> int:
    recovery = journal.recover(settings.var_path, settings.database_path)
    if recovery is None:
        print("nothing to recover: no run was interrupted")
    else:
        print(recovery.describe())
        _announce(settings, recovery)
    return int(ExitCode.OK)


def _choose_experiment(
    settings: Settings, experiment_id: str | None
) -> tuple[Experiment, str]:
    """The experiment to run and why: ``--experiment``, else the next due queue
    item (taken out of the queue), else a kept change due for a recheck."""
    if experiment_id:
        return experiments_mod.find(settings.experiments_path, experiment_id), "cli"
    store = Store(settings.database_path)
    try:
        item = queue_mod.take_next_due(store)
        if item is not None:
            # Taken before the run: an experiment that keeps failing cannot wedge
            # the queue; its failed run stays in the history.
            found = experiments_mod.find(settings.experiments_path, item.experiment_id)
            return found, "queue"
        valid = [
            entry.id
            for entry in experiments_mod.discover(settings.experiments_path)
            if isinstance(entry, Experiment)
        ]
        due = queue_mod.recheck_due(store, valid, settings.recheck_days)
        waiting = len(queue_mod.items(store))
    finally:
        store.close()
    if due is not None:
        found = experiments_mod.find(settings.experiments_path, due.experiment_id)
        return found, "recheck"
    later = f" ({waiting} waiting for a later time)" if waiting else ""
    raise NothingToDo(
        f"the queue is empty{later} and no kept change is older than RECHECK_DAYS="
        f"{settings.recheck_days:g}; add one with `smart-tui queue add ID`"
    )


def run_once(settings: Settings, experiment_id: str | None) -> int:
    from smart_tui.progress import make_observer

    with RunLock(settings.var_path / "run.lock", "smart-tui --run-once") as lock:
        # Before the queue is touched: an unwritable record refuses the run.
        check = Store(settings.database_path)
        try:
            check.require_writable()
        finally:
            check.close()
        experiment, why = _choose_experiment(settings, experiment_id)
        lock.update(f"a run of {experiment.id}")
        store = Store(settings.database_path)
        try:
            with make_observer(sys.stderr) as observer:
                from smart_tui.runner import run_experiment

                outcome = run_experiment(
                    settings,
                    experiment,
                    store,
                    observer=observer,
                    trigger="run-once" if why == "cli" else f"run-once:{why}",
                    recheck=why == "recheck",
                )
        finally:
            store.close()
    print_outcome(outcome)
    return int(ExitCode.OK)


def print_outcome(outcome: RunOutcome) -> None:
    print(f"experiment: {outcome.experiment_id}")
    print(f"run:        {outcome.run_id}")
    print(f"outcome:    {outcome.outcome}")
    print(f"kept:       {outcome.kept_variant or 'baseline'}")
    for result in outcome.results:
        print(f"variant {result.variant}: {result.decision}")
        for reason in result.reasons:
            print(f"  - {reason}")
    for warning in outcome.warnings:
        print(f"warning:    {warning}")
    if outcome.run_dir:
        print(f"records:    {outcome.run_dir}")
    if outcome.dashboard_path:
        print(f"dashboard:  {outcome.dashboard_path}")


def queue_add(settings: Settings, experiment_ids: list[str], after: str | None) -> int:
    not_before = queue_mod.normalise_time(after) if after else ""
    for experiment_id in experiment_ids:
        # An unknown or broken experiment is refused now, not at 3 a.m.
        experiments_mod.find(settings.experiments_path, experiment_id)
    store = Store(settings.database_path)
    try:
        for experiment_id in experiment_ids:
            item = queue_mod.add(store, experiment_id, not_before=not_before)
            print(f"queued #{item.id}: {item.experiment_id}")
    finally:
        store.close()
    return int(ExitCode.OK)


def queue_list(settings: Settings) -> int:
    store = Store(settings.database_path)
    try:
        waiting = queue_mod.items(store)
    finally:
        store.close()
    if not waiting:
        print("the queue is empty; add an experiment with `smart-tui queue add ID`")
    for order, item in enumerate(waiting, start=1):
        when = f"  not before {item.not_before}" if item.not_before else ""
        print(f"{order:>3}. #{item.id:<5} {item.experiment_id}{when}")
    return int(ExitCode.OK)


def queue_remove(settings: Settings, item_ids: list[int]) -> int:
    store = Store(settings.database_path)
    try:
        for item_id in item_ids:
            item = queue_mod.remove(store, item_id)
            print(f"removed #{item.id}: {item.experiment_id}")
    finally:
        store.close()
    return int(ExitCode.OK)


def queue_clear(settings: Settings) -> int:
    store = Store(settings.database_path)
    try:
        count = queue_mod.clear(store)
    finally:
        store.close()
    print(f"removed {count} item(s); the queue is empty")
    return int(ExitCode.OK)


def list_experiments(settings: Settings) -> int:
    entries = experiments_mod.discover(settings.experiments_path)
    broken = 0
    for entry in entries:
        if isinstance(entry, BrokenExperiment):
            broken += 1
            print(f"{entry.id:<28} BROKEN  {entry.error}")
            continue
        names = ", ".join(variant.name for variant in entry.meta.variants)
        print(f"{entry.id:<28} ok      {entry.meta.description} [{names}]")
    if not entries:
        print(f"no experiments in {settings.experiments_path}", file=sys.stderr)
    return int(ExitCode.BAD_EXPERIMENT if broken else ExitCode.OK)


def check_config(settings: Settings) -> int:
    print(format_rows(describe(settings)))
    return int(ExitCode.OK)


def lab(settings: Settings, action: str, port: int | None, reset: bool) -> int:
    from smart_tui.lab import Lab

    the_lab = Lab(settings.var_path)
    if action in ("start", "stop"):
        # Restarting or resetting nginx under a run would corrupt its measurement
        # and its revert: wait for the run lock like any run does.
        with RunLock(settings.var_path / "run.lock", f"smart-tui lab {action}"):
            if action == "start":
                print(the_lab.format_status(the_lab.start(port=port, reset=reset)))
            else:
                the_lab.stop()
                print("lab stopped")
    else:
        status = the_lab.status()
        if status is None:
            print("lab never started; run `smart-tui lab start`")
            return int(ExitCode.LAB_FAILED)
        print(the_lab.format_status(status))
        if not status.running:
            return int(ExitCode.LAB_FAILED)
    return int(ExitCode.OK)


def history(settings: Settings, limit: int) -> int:
    store = Store(settings.database_path)
    try:
        for run in store.runs(limit=limit):
            print(
                f"{run.started_at}  {run.id:<44} {run.outcome or run.status:<13}"
                f" kept={run.kept_variant or '-'}"
            )
    finally:
        store.close()
    return int(ExitCode.OK)


def dashboard(settings: Settings) -> int:
    store = Store(settings.database_path)
    try:
        from smart_tui.dashboard import write_dashboard

        path = write_dashboard(store, settings.www_path)
    except OSError as exc:
        raise OutputFailed(
            f"cannot write {settings.www_path / 'index.html'}: {exc.strerror}; make "
            "WWW_DIR writable by this user or point WWW_DIR elsewhere in smart.conf"
        ) from None
    finally:
        store.close()
    print(path)
    return int(ExitCode.OK)


def probe(args: argparse.Namespace) -> int:
    from smart_tui.probe import probe_command

    return probe_command(args)


def calibrate(settings: Settings, experiment_id: str | None) -> int:
    from smart_tui.calibrate import calibrate as run_calibration

    if experiment_id:
        experiment = experiments_mod.find(settings.experiments_path, experiment_id)
    else:
        valid = [
            entry
            for entry in experiments_mod.discover(settings.experiments_path)
            if isinstance(entry, Experiment)
        ]
        if not valid:
            raise NothingToDo(f"no valid experiment in {settings.experiments_path}")
        experiment = valid[0]
    with RunLock(settings.var_path / "run.lock", "smart-tui calibrate"):
        result = run_calibration(settings, experiment)
    print(result.describe())
    return int(ExitCode.OK)


def coach_test(settings: Settings) -> int:
    from smart_tui import outreach

    answer = outreach.coach_test(settings)
    print(f"coach:   {answer.source} (HTTP {answer.status}, {answer.elapsed_s:.2f} s)")
    print(f"advice:  {answer.advice.advice}")
    print(f"variant: {answer.advice.variant or '-'}")
    print(f"note:    {answer.advice.note or '-'}")
    return int(ExitCode.OK)


def notify_test(settings: Settings, severity: str) -> int:
    from smart_tui import outreach

    deliveries = outreach.notify_test(settings, severity)
    for delivery in deliveries:
        print(f"{delivery.target:<8} {delivery.detail}")
    failed = [d for d in deliveries if not d.ok and not d.detail.startswith("skip")]
    return int(ExitCode.TARGET_UNREACHABLE if failed else ExitCode.OK)


def open_app(settings: Settings) -> int:
    from smart_tui.tui import run_app

    return run_app(settings)
