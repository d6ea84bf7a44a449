"""Errors a user can act on, and the process exit codes they map to.

Core code raises a ``SmartError`` subclass whose message is one line naming what was
attempted and how to fix it; only the CLI turns it into an exit code, never a
traceback."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status of ``smart-tui``; documented in README.md."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    BAD_CONFIG = 3
    BAD_EXPERIMENT = 4
    APPLY_FAILED = 5
    REVERT_FAILED = 6
    TARGET_UNREACHABLE = 7
    LOCKED = 8
    LAB_FAILED = 9
    NOTHING_TO_DO = 10
    CHECKS_FAILED = 11
    DATABASE_FAILED = 12
    OUTPUT_FAILED = 13
    INTERRUPTED = 130


class SmartError(Exception):
    """Base of every error a user can act on."""

    exit_code: ExitCode = ExitCode.INTERNAL
    title = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SmartError):
    exit_code = ExitCode.USAGE
    title = "usage"


class ConfigError(SmartError):
    exit_code = ExitCode.BAD_CONFIG
    title = "bad config"


class ExperimentError(SmartError):
    exit_code = ExitCode.BAD_EXPERIMENT
    title = "bad experiment"


class ApplyFailed(SmartError):
    exit_code = ExitCode.APPLY_FAILED
    title = "apply failed"


class RevertFailed(SmartError):
    exit_code = ExitCode.REVERT_FAILED
    title = "revert failed"


class TargetUnreachable(SmartError):
    exit_code = ExitCode.TARGET_UNREACHABLE
    title = "target unreachable"


class LockHeld(SmartError):
    exit_code = ExitCode.LOCKED
    title = "locked"


class LabError(SmartError):
    exit_code = ExitCode.LAB_FAILED
    title = "lab failed"


class NothingToDo(SmartError):
    exit_code = ExitCode.NOTHING_TO_DO
    title = "nothing to do"


class OutputFailed(SmartError):
    exit_code = ExitCode.OUTPUT_FAILED
    title = "output failed"


class Interrupted(SmartError):
    exit_code = ExitCode.INTERRUPTED
    title = "interrupted"
