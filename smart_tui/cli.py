"""The ``smart-tui`` command: argument parsing and the headless front end.

Results go to stdout, diagnostics to stderr. Every ``SmartError`` becomes one
``smart-tui: <title>: <message>`` line and its exit code; only a bug shows a
traceback. With no arguments the Textual app opens (imported only then)."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from smart_tui import __version__
from smart_tui.errors import ConfigError, ExitCode, Interrupted, SmartError

if TYPE_CHECKING:
    from smart_tui.settings import Settings

log = logging.getLogger("smart_tui")

# Flags that are shorthands for `--set KEY=VALUE`.
_SETTING_FLAGS = {
    "baseline_seconds": "BASELINE_SECONDS",
    "experiment_seconds": "EXPERIMENT_SECONDS",
    "cooldown_seconds": "COOLDOWN_SECONDS",
    "settle_seconds": "SETTLE_SECONDS",
    "target_url": "TARGET_URL",
    "policy": "DECISION_POLICY",
}


def _add_setting_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options every command takes, before or after the command's name. On a
    subcommand their defaults are suppressed so they never hide a value given
    before the name."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--config",
        type=Path,
        default=default(None),
        help="smart.conf to read (default: SMART_CONFIG, ./)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=default([]),
        metavar="KEY=VALUE",
        help="override one smart.conf setting (repeatable)",
    )
    for flag in _SETTING_FLAGS:
        if flag == "policy":
            continue
        metavar = "URL" if flag == "target_url" else "S"
        parser.add_argument(
            "--" + flag.replace("_", "-"), metavar=metavar, default=default(None)
        )
    parser.add_argument(
        "--policy",
        choices=["stats", "seed"],
        default=default(None),
        help="decision policy",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="log warnings and errors only",
    )


def _number(low: float, high: float, *, whole: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high], an int if ``whole``."""
    kind = "a whole number" if whole else "a number"

    def parse(text: str) -> float:
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not (low <= value <= high) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"{text} is out of range; expected {kind} from {low:g} to {high:g}"
            )
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix, like every other
    error of smart-tui, instead of the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            int(ExitCode.USAGE),
            f"smart-tui: usage: {message}; see `{self.prog} --help`\n",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="smart-tui",
        description=(
            "Run performance experiments on a live nginx and keep only what the "
            "evidence supports. Without a command, opens the terminal app."
        ),
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--run-once",
        action="store_true",
        help="run one experiment headless (the timer's command) and exit",
    )
    parser.add_argument(
        "--experiment",
        metavar="ID",
        help="with --run-once: run this experiment (default: the queue's next item)",
    )
    _add_setting_options(parser, suppress=False)

    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser
    )
    commands.add_parser("list", help="list experiments and whether they are valid")
    commands.add_parser(
        "check-config", help="print every setting, its value and where it came from"
    )
    lab = commands.add_parser("lab", help="the private nginx lab on 127.0.0.1")
    lab.add_argument("action", choices=["start", "stop", "status"])
    lab.add_argument("--port", type=int, help="with start: port (default: a free one)")
    lab.add_argument(
        "--reset", action="store_true", help="with start: rewrite the baseline config"
    )
    probe = commands.add_parser("probe", help="measure a URL at a fixed request rate")
    probe.add_argument("url")
    probe.add_argument(
        "--rate", type=_number(0, 1e6), default=100.0, help="req/s; 0 = max"
    )
    probe.add_argument(
        "--duration", type=_number(0.1, 86400), default=10.0, help="seconds"
    )
    probe.add_argument("--connections", type=_number(1, 10000, whole=True), default=16)
    probe.add_argument(
        "--timeout", type=_number(0.001, 600), default=2.0, help="seconds per request"
    )
    probe.add_argument(
        "--warmup",
        type=_number(0, 3600),
        default=0.0,
        help="seconds recorded, not scored",
    )
    probe.add_argument(
        "--poisson", action="store_true", help="Poisson spacing instead of fixed"
    )
    probe.add_argument(
        "--header", action="append", metavar="'NAME: VALUE'", help="(repeatable)"
    )
    probe.add_argument("--json", action="store_true", help="one JSON object")
    calibrate = commands.add_parser(
        "calibrate",
        help="A/A run: measure this host's noise and the window length needed",
    )
    calibrate.add_argument(
        "--experiment", metavar="ID", default=argparse.SUPPRESS, help="whose URL"
    )
    commands.add_parser(
        "recover", help="put back the config of a run whose process died, if any"
    )
    commands.add_parser(
        "doctor",
        help="check sudo, owners and modes, nginx -t and the target; change nothing",
    )
    history = commands.add_parser("history", help="past runs and their decisions")
    history.add_argument("--limit", type=_number(1, 100000, whole=True), default=20)
    commands.add_parser("dashboard", help="rewrite the HTML dashboard now")
    queue = commands.add_parser("queue", help="what the next --run-once runs")
    queue_actions = queue.add_subparsers(dest="queue_action", metavar="ACTION")
    queue_actions.required = True
    queue_add = queue_actions.add_parser("add", help="append experiments to the queue")
    queue_add.add_argument("experiment_ids", nargs="+", metavar="ID")
    queue_add.add_argument(
        "--after", metavar="TIME", help="not before this ISO 8601 time (UTC if bare)"
    )
    queue_actions.add_parser("list", help="the waiting items, next first")
    queue_remove = queue_actions.add_parser("remove", help="remove items by #number")
    queue_remove.add_argument("item_ids", nargs="+", type=int, metavar="N")
    queue_actions.add_parser("clear", help="remove every waiting item")
    coach = commands.add_parser("coach", help="the coach (COACH_URL)")
    coach.add_argument("action", choices=["test"], help="test: send a sample run")
    notify = commands.add_parser("notify", help="Slack, Discord and webhook messages")
    notify.add_argument("action", choices=["test"], help="test: send a test message")
    notify.add_argument(
        "--severity",
        choices=["info", "notice", "warning", "critical"],
        default="critical",
        help="severity of the test message (default: critical, reaches every target)",
    )
    for subcommand in commands.choices.values():
        _add_setting_options(subcommand, suppress=True)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE, e.g. --set IMPROVE_PCT=5"
            )
        overrides[key.strip().upper()] = value
    for attribute, key in _SETTING_FLAGS.items():
        value = getattr(args, attribute)
        if value is not None:
            overrides[key] = str(value)
    return overrides


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # journald adds its own timestamps; keep lines plain and greppable.
    handler.setFormatter(logging.Formatter("smart-tui: %(levelname)s %(message)s"))
    root = logging.getLogger("smart_tui")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"stopped by {signal.Signals(signum).name}; reverted to baseline")


def _install_signal_handlers() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet)
    try:
        return _dispatch(parser, args)
    except SmartError as exc:
        print(f"smart-tui: {exc.title}: {exc.message}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("smart-tui: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


def _queue(args: argparse.Namespace, settings: Settings) -> int:
    from smart_tui import commands

    if args.queue_action == "add":
        return commands.queue_add(settings, args.experiment_ids, args.after)
    if args.queue_action == "remove":
        return commands.queue_remove(settings, args.item_ids)
    if args.queue_action == "clear":
        return commands.queue_clear(settings)
    return commands.queue_list(settings)


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from smart_tui import commands

    if args.command == "probe":
        return commands.probe(args)
    if args.command == "doctor":
        return commands.doctor(args.config, _overrides(args))
    settings = commands.settings_from(args.config, _overrides(args))
    if args.command == "check-config" and not (args.run_once or args.experiment):
        # Read-only: no recovery, so it is safe as root whoever owns var/.
        return commands.check_config(settings)
    commands.refuse_foreign_state(settings)
    if args.command == "recover":
        return commands.recover(settings)
    commands.recover_on_start(settings)
    if args.run_once:
        if args.command:
            parser.error("--run-once takes no COMMAND")
        _install_signal_handlers()
        return commands.run_once(settings, args.experiment)
    if args.command == "calibrate":
        return commands.calibrate(settings, args.experiment)
    if args.experiment:
        parser.error("--experiment goes with --run-once or calibrate")
    if args.command == "list":
        return commands.list_experiments(settings)
    if args.command == "check-config":
        return commands.check_config(settings)
    if args.command == "lab":
        return commands.lab(settings, args.action, args.port, args.reset)
    if args.command == "history":
        return commands.history(settings, args.limit)
    if args.command == "dashboard":
        return commands.dashboard(settings)
    if args.command == "queue":
        return _queue(args, settings)
    if args.command == "coach":
        return commands.coach_test(settings)
    if args.command == "notify":
        return commands.notify_test(settings, args.severity)
    return commands.open_app(settings)
