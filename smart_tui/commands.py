"""What each headless command does, over the core; the CLI only parses and maps
errors. Data goes to stdout, diagnostics to stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from smart_tui import experiments as experiments_mod
from smart_tui.config import Settings, describe, format_rows, load_settings
from smart_tui.errors import ExitCode, NothingToDo
from smart_tui.experiments import BrokenExperiment, Experiment
from smart_tui.lab import Lab
from smart_tui.lock import RunLock
from smart_tui.runner import RunOutcome, refresh_dashboard, run_experiment
from smart_tui.storage import Store


def settings_from(config: Path | None, overrides: Mapping[str, str]) -> Settings:
    return load_settings(config_path=config, overrides=overrides)


def _choose_experiment(settings: Settings, experiment_id: str | None) -> Experiment:
    if experiment_id:
        return experiments_mod.find(settings.experiments_path, experiment_id)
    entries = experiments_mod.discover(settings.experiments_path)
    valid = [entry for entry in entries if isinstance(entry, Experiment)]
    if not valid:
        raise NothingToDo(
            f"no valid experiment in {settings.experiments_path}; "
            "see `smart-tui list` for what is wrong"
        )
    # Without a queue (yet), the experiment run longest ago goes next.
    store = Store(settings.database_path)
    try:
        last_started = {
            entry.id: next(
                (run.started_at for run in store.runs(1, experiment_id=entry.id)), ""
            )
            for entry in valid
        }
    finally:
        store.close()
    return min(valid, key=lambda entry: (last_started[entry.id], entry.id))


def run_once(settings: Settings, experiment_id: str | None) -> int:
    from smart_tui.progress import make_observer

    with RunLock(settings.var_path / "run.lock", "smart-tui --run-once") as lock:
        experiment = _choose_experiment(settings, experiment_id)
        lock.update(f"a run of {experiment.id}")
        store = Store(settings.database_path)
        try:
            with make_observer(sys.stderr) as observer:
                outcome = run_experiment(
                    settings, experiment, store, observer=observer, trigger="run-once"
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
    if outcome.run_dir:
        print(f"records:    {outcome.run_dir}")
    if outcome.dashboard_path:
        print(f"dashboard:  {outcome.dashboard_path}")


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
    the_lab = Lab(settings.var_path)
    if action == "start":
        info = the_lab.start(port=port, reset=reset)
        print(the_lab.format_status(info))
    elif action == "stop":
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
        path = refresh_dashboard(settings, store)
    finally:
        store.close()
    if path is None:
        return int(ExitCode.INTERNAL)
    print(path)
    return int(ExitCode.OK)


def probe(args: argparse.Namespace) -> int:
    from smart_tui.probe import ProbeConfig, format_summary, run_probe

    config = ProbeConfig(
        url=args.url,
        rate_rps=args.rate,
        duration_s=args.duration,
        connections=args.connections,
    )
    result = run_probe(config)
    if args.json:
        print(json.dumps(result.summary(), sort_keys=True))
    else:
        print(format_summary(result))
    return int(ExitCode.OK)


def open_app(settings: Settings) -> int:
    from smart_tui.tui import run_app

    return run_app(settings)
