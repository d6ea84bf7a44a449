"""The coach's answer: one advice from a closed set, an optional variant and a note.

``parse_advice`` accepts an answer only if it is a JSON object of that shape, names
only variants of the experiment's own meta.json, and carries nothing that reads like
a shell command. Anything else is an ``AdviceRejected`` with a one-line reason."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smart_tui.errors import ExitCode, SmartError

AdviceKind = Literal["agree", "keep", "revert", "extend", "rerun_later", "try_variant"]
ADVICE_KINDS: tuple[str, ...] = get_args(AdviceKind)
NOTE_MAX_CHARS = 2000

# Keys that would mean "run this": advice never runs anything, so an answer
# carrying one is not trusted at all.
_COMMAND_KEYS = frozenset(
    {"command", "commands", "cmd", "shell", "exec", "run", "script", "bash"}
)
_COMMAND_PATTERNS = [
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"`",
        r"\$\(",
        r"&&|\|\|",
        r"\|\s*(sudo|sh|bash|zsh|python3?)\b",
        r"(^|[\s;])(sudo|chmod|chown|systemctl|service|mkfs|eval|exec)\s+\S",
        r"(^|[\s;])(rm|kill|pkill|killall|nginx|curl|wget)\s+-",
        r"(^|[\s;])(curl|wget)\s+\S+://",
        r"(^|[\s;])(bash|sh|python3?)\s+-c\b",
        r"(^|[\s;])dd\s+if=",
        r">\s*/(etc|dev|tmp|var|usr|bin|root|home)/",
        r"(^|\n)\s*[$#]\s+\w",
    )
]


class AdviceRejected(SmartError):
    """The coach answered, but not with acceptable advice."""

    exit_code = ExitCode.TARGET_UNREACHABLE
    title = "coach advice rejected"


class Advice(BaseModel):
    """Validated advice; ``variant`` is set for try_variant, optional otherwise."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    advice: AdviceKind
    variant: str | None = Field(default=None, max_length=64)
    note: str = Field(default="", max_length=NOTE_MAX_CHARS)


def looks_like_command(text: str) -> bool:
    """Whether free text contains something a reader could paste into a shell."""
    return any(pattern.search(text) for pattern in _COMMAND_PATTERNS)


def _decode(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "msg", "not UTF-8")
        raise AdviceRejected(f"the answer is not JSON ({reason})") from None


def _validation_reason(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "answer"
    if error["type"] == "missing":
        return f"the answer has no {field!r}"
    if field == "advice":
        return f"'advice' must be one of {', '.join(ADVICE_KINDS)}"
    return f"{field!r} is invalid ({error['msg'].lower()})"


def parse_advice(raw: bytes | str | Any, variant_names: Sequence[str]) -> Advice:
    """Advice from a JSON text (or an already decoded value) for an experiment
    whose variants are ``variant_names``, the first being the baseline."""
    value = _decode(raw) if isinstance(raw, bytes | str) else raw
    if not isinstance(value, dict):
        raise AdviceRejected("the answer is not a JSON object")
    command_keys = sorted(key for key in value if str(key).lower() in _COMMAND_KEYS)
    if command_keys:
        raise AdviceRejected(
            f"the answer carries {command_keys[0]!r}; advice may not contain commands"
        )
    try:
        advice = Advice.model_validate(value)
    except ValidationError as exc:
        raise AdviceRejected(_validation_reason(exc)) from None
    _check_variant(advice, variant_names)
    if looks_like_command(advice.note):
        raise AdviceRejected(
            "the note reads like a shell command; advice may not contain commands"
        )
    return advice


def _check_variant(advice: Advice, variant_names: Sequence[str]) -> None:
    known = ", ".join(variant_names)
    if advice.variant is None:
        if advice.advice == "try_variant":
            raise AdviceRejected(f"try_variant names no variant; known: {known}")
        return
    if advice.variant not in variant_names:
        shown = advice.variant if advice.variant.isprintable() else "(unprintable)"
        raise AdviceRejected(
            f"the advice names variant {shown[:64]!r}, which the experiment does not "
            f"have; known: {known}"
        )
    if advice.advice == "try_variant" and advice.variant == variant_names[0]:
        raise AdviceRejected(
            f"try_variant names the baseline {advice.variant!r}; name another variant"
        )
