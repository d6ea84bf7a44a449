"""README.md stays true: every command and option of the CLI is documented, every
exit code is in the table, and the two top commands are the ones CI runs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from smart_tui.cli import build_parser
from smart_tui.errors import ExitCode

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def test_every_command_and_option_is_in_the_readme() -> None:
    parser = build_parser()
    missing = [option for option in long_options(parser) if option not in README]
    for name, sub in subcommands(parser).items():
        if f"smart-tui {name}" not in README:
            missing.append(f"smart-tui {name}")
        missing += [f"{name} {o}" for o in long_options(sub) if o not in README]
    assert missing == []


def test_every_exit_code_is_in_the_table() -> None:
    rows = dict(re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", README, re.MULTILINE))
    assert rows == {str(int(code)): code.name for code in ExitCode}


def test_ci_runs_the_readme_test_command() -> None:
    first_block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["bash deploy/demo.sh", "bash tests/run.sh"]
    assert (REPO / ".ci" / "run").read_text().rstrip().endswith("bash tests/run.sh")
