"""A local model as coach: the compact prompt built from a coach document, the
request bodies of Ollama's ``/api/chat`` and of an OpenAI-compatible
``/v1/chat/completions`` (llama.cpp's server), and the model's text taken out of
their answers. The text is then judged by ``advice.parse_advice`` like any other."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from smart_tui.coach.advice import ADVICE_KINDS, AdviceRejected

NOTES_MAX_CHARS = 1500


def _figure(value: Any, unit: str = "", digits: int = 2) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.{digits}f}{unit}"
    return "n/a"


def system_prompt(variant_names: list[str]) -> str:
    names = ", ".join(variant_names[1:]) or "(none)"
    return (
        "You advise smart-tui, a tool that A/B tests nginx settings on a live server "
        "and keeps a change only when the numbers prove it. Reply with one JSON "
        'object and nothing else: {"advice": A, "variant": V, "note": N}. '
        f"A is one of: {', '.join(ADVICE_KINDS)} (agree = the tool's decision is "
        "right; extend = measure longer; rerun_later = try again at another time). "
        f"V is null, or for try_variant one of: {names}. N is at most two plain "
        "sentences saying why. Never write commands or code."
    )


def user_prompt(document: Mapping[str, Any]) -> str:
    """The results in a few short lines: small models read little well."""
    experiment = document.get("experiment", {})
    thresholds = document.get("thresholds", {})
    run = document.get("run", {})
    lines = [
        f"experiment {experiment.get('id')}: {experiment.get('description', '')}",
        f"variants: {', '.join(experiment.get('variants', []))} "
        f"(the first is the baseline)",
        f"rule: keep if p50 improves by >= {thresholds.get('improve_pct')}% "
        f"at {thresholds.get('confidence', 'n/a')} confidence, 5xx rising by "
        f"<= {thresholds.get('max_err_delta_pct', 'n/a')} points",
    ]
    for window in document.get("windows", []):
        lines.append(
            f"window {window.get('role')} {window.get('variant')}: "
            f"{window.get('requests')} requests, p50 {_figure(window.get('p50_ms'))} "
            f"ms, p99 {_figure(window.get('p99_ms'))} ms, 5xx "
            f"{_figure(window.get('error_pct'), '%')}, "
            f"{_figure(window.get('achieved_rps'), digits=0)}/"
            f"{_figure(window.get('intended_rps'), digits=0)} req/s"
        )
    for decision in document.get("decisions", []):
        reasons = "; ".join(decision.get("reasons", []))
        lines.append(
            f"decision {decision.get('variant')}: {decision.get('decision')}: {reasons}"
        )
    lines.append(
        f"outcome: {run.get('outcome')}, kept: {run.get('kept_variant') or 'baseline'}"
        f", uncertain: {run.get('uncertain') or 'no'}"
    )
    notes = str(document.get("notes") or "").strip()
    if notes:
        lines.append("operator notes: " + notes[:NOTES_MAX_CHARS])
    return "\n".join(lines)


def _messages(document: Mapping[str, Any]) -> list[dict[str, str]]:
    names = list(document.get("experiment", {}).get("variants", []))
    return [
        {"role": "system", "content": system_prompt(names)},
        {"role": "user", "content": user_prompt(document)},
    ]


def ollama_body(model: str, document: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "messages": _messages(document),
        "format": "json",
        "stream": False,
        "options": {"temperature": 0},
    }


def openai_body(model: str, document: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "messages": _messages(document),
        "response_format": {"type": "json_object"},
        "temperature": 0,
        "stream": False,
    }


def _json_object(body: bytes, server: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AdviceRejected(f"the {server} answer is not JSON") from None
    if not isinstance(value, dict):
        raise AdviceRejected(f"the {server} answer is not a JSON object")
    return value


def ollama_text(body: bytes) -> str:
    """The model's reply in an Ollama /api/chat answer."""
    message = _json_object(body, "Ollama").get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise AdviceRejected("the Ollama answer has no message.content")
    return content


def openai_text(body: bytes) -> str:
    """The model's reply in an OpenAI-style chat completion."""
    choices = _json_object(body, "model server").get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise AdviceRejected("the model server's answer has no choices[0].message")
    return content
