"""The syntax of a bash-style config file, read without executing anything.

``statements`` splits text the way bash would source it (``shlex`` in POSIX mode:
quotes, ``export``, inline comments; a quote may span lines); ``assignment`` accepts
only ``[export] KEY=value``. ``rewrite`` changes one value in place, keeping the
statement's indent, ``export`` and comment. What the keys mean is ``config``'s."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import suppress
from typing import NamedTuple

from smart_tui.errors import ConfigError


class Assignment(NamedTuple):
    """One ``[export] KEY=value`` statement spanning lines first..last (1-based)."""

    key: str
    value: str
    first: int
    last: int
    exported: bool


class Unclosed(Exception):
    def __init__(self, what: str) -> None:
        self.what = what


_PUNCTUATION = set("();<>|&")


def lex(code: str) -> list[str]:
    """Words of one statement as bash would split them, minus any comment."""
    lexer = shlex.shlex(code, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # so '=', '/', '$' stay inside words
    try:
        return list(lexer)
    except ValueError:
        # shlex's state is the open quote, or the escape char for a trailing \
        raise Unclosed(str(getattr(lexer, "state", ""))) from None


def statements(text: str, where: str) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, words) per statement; a quote may span lines."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    index = 0
    while index < len(lines):
        first, code = index, lines[index]
        while True:
            try:
                words = lex(code)
                break
            except Unclosed as exc:
                index += 1
                if exc.what == "\\" or index == len(lines):
                    message = _unclosed_message(where, first + 1, exc.what)
                    raise ConfigError(message) from None
                code += "\n" + lines[index]
        yield first + 1, index + 1, words
        index += 1


def _unclosed_message(where: str, line: int, what: str) -> str:
    if what == "\\":
        return (
            f"{where}:{line}: a trailing \\ (line continuation) is not supported; "
            "put the whole KEY=value on one line"
        )
    return f"{where}:{line}: unterminated quote; close the {what} opened on this line"


def _split_assignment(word: str) -> tuple[str, str] | None:
    key, sep, value = word.partition("=")
    if sep and key.isidentifier() and key.isascii():
        return key, value
    return None


def _statement_error(words: list[str]) -> str:
    """What is wrong with a statement that is not one KEY=value, and the fix."""
    odd = next((w for w in words if set(w) <= _PUNCTUATION), None)
    if odd is not None:
        return (
            f"unexpected {odd!r}; nothing is run, so write one KEY=value per line "
            f"and quote a value containing {odd}"
        )
    if len(words) >= 2 and words[0].isidentifier() and words[1].startswith("="):
        return f"expected {words[0]}=value, found spaces around =; remove them"
    head = _split_assignment(words[0])
    if head is not None and head[1] == "":
        return f"expected {head[0]}=value, found a space after =; remove it"
    if head is not None:
        return (
            f"expected one KEY=value, found more words after {head[0]}=; "
            "quote a value that contains spaces"
        )
    # The line may be a secret that wrapped (a token, a webhook URL): name only a
    # first word that reads like a command, never echo the rest.
    first = words[0]
    if first.isidentifier() and first.islower() and len(first) <= 32:
        found = f"the command {first!r}"
    else:
        found = "a line without KEY="
    return f"expected KEY=value, found {found}; only assignments are allowed"


def assignment(first: int, last: int, words: list[str], where: str) -> Assignment:
    exported = words[0] == "export"
    rest = words[1:] if exported else words
    parsed = _split_assignment(rest[0]) if len(rest) == 1 else None
    if parsed is None:
        problem = _statement_error(rest or words)
        raise ConfigError(f"{where}:{first}: {problem}")
    return Assignment(parsed[0], parsed[1], first, last, exported)


def _split_comment(code: str) -> tuple[str, str]:
    """(code, trailing comment with its leading spaces); found by asking shlex."""
    words = lex(code)
    for index, char in enumerate(code):
        if char != "#":
            continue
        head = code[:index]
        with suppress(Unclosed):
            if lex(head) == words:
                kept = head.rstrip()
                return kept, code[len(kept) :]
    return code, ""


def rewrite(lines: list[str], item: Assignment, value: str) -> str:
    """The statement with a new value, keeping indent, export and comment."""
    span = lines[item.first - 1 : item.last]
    code = "".join(span).rstrip("\r\n")
    ending = span[-1][len(span[-1].rstrip("\r\n")) :]
    _, comment = _split_comment(code)
    indent = code[: len(code) - len(code.lstrip())]
    export = "export " if item.exported else ""
    return f"{indent}{export}{item.key}={shlex.quote(value)}{comment}{ending}"


def lines_with_endings(text: str) -> list[str]:
    # Only \n ends a line, as for bash; str.splitlines() would also split on
    # form feeds and the like and so disagree with statements' numbering.
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
