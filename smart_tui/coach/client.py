"""Asking the coach: which server COACH_URL names (the coach API, Ollama, or an
OpenAI-compatible model server), one bounded exchange with it, and the answer
validated into ``Advice``. Raises ``OutboundError`` (unreachable, HTTP error, too
slow), ``AdviceRejected`` (unusable answer) or ``ConfigError`` (bad COACH_URL)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from smart_tui.coach import local
from smart_tui.coach.advice import Advice, parse_advice
from smart_tui.coach.wire import (
    Deadline,
    OutboundError,
    Request,
    post_json,
    register_secrets,
    safe_label,
)
from smart_tui.errors import ConfigError
from smart_tui.settings import Settings

log = logging.getLogger("smart_tui.coach.client")

Kind = Literal["api", "ollama", "openai"]
# Answers of the coach API are small; a chatty local model gets more room.
API_MAX_BYTES = 64 * 1024
MODEL_MAX_BYTES = 512 * 1024


@dataclass(frozen=True)
class Endpoint:
    """Where and how to ask: the http(s) URL to POST to, and the model if any."""

    kind: Kind
    post_url: str
    model: str = ""

    @property
    def label(self) -> str:
        """For messages: the kind and host, never a path or a query."""
        model = f" model {self.model}" if self.model else ""
        return f"{self.kind} coach at {safe_label(self.post_url)}{model}"


def endpoint_of(coach_url: str) -> Endpoint:
    """The endpoint COACH_URL names; ConfigError if it is empty or names no model."""
    if not coach_url:
        raise ConfigError("COACH_URL is empty; set it in smart.conf to use a coach")
    parts = urlsplit(coach_url)
    if parts.scheme in ("http", "https"):
        return Endpoint("api", coach_url)
    model = parts.path.strip("/")
    if not model:
        raise ConfigError(
            f"COACH_URL {safe_label(coach_url)} names no model; add it as the path, "
            "e.g. ollama://127.0.0.1:11434/qwen2.5:0.5b"
        )
    if parts.scheme == "ollama":
        return Endpoint("ollama", _http_url("http", parts.netloc, "/api/chat"), model)
    scheme = parts.scheme.removeprefix("openai+")
    path = "/v1/chat/completions"
    return Endpoint("openai", _http_url(scheme, parts.netloc, path), model)


def _http_url(scheme: str, netloc: str, path: str) -> str:
    return urlunsplit((scheme, netloc, path, "", ""))


@dataclass(frozen=True)
class CoachAnswer:
    """Validated advice, who gave it, and what the exchange cost."""

    advice: Advice
    source: str
    status: int
    attempts: int
    elapsed_s: float


def secrets_of(settings: Settings) -> list[str]:
    """Every value that must never be shown: token, webhooks, credentials in URLs."""
    found = [
        settings.coach_token.get_secret_value(),
        settings.slack_webhook_url.get_secret_value(),
        settings.discord_webhook_url.get_secret_value(),
        settings.webhook_url.get_secret_value(),
    ]
    for url in (settings.coach_url, settings.coach_proxy):
        parts = urlsplit(url)
        if "@" in parts.netloc:
            found.append(parts.netloc.rpartition("@")[0])
        found += [parts.query, parts.fragment]
    return [secret for secret in found if secret]


def _body(endpoint: Endpoint, document: Mapping[str, Any]) -> Mapping[str, Any]:
    if endpoint.kind == "ollama":
        return local.ollama_body(endpoint.model, document)
    if endpoint.kind == "openai":
        return local.openai_body(endpoint.model, document)
    return document


def _advice_text(endpoint: Endpoint, body: bytes) -> bytes | str:
    if endpoint.kind == "ollama":
        return local.ollama_text(body)
    if endpoint.kind == "openai":
        return local.openai_text(body)
    return body


def ask_coach(
    settings: Settings,
    document: Mapping[str, Any],
    variant_names: Sequence[str],
    deadline: Deadline,
) -> CoachAnswer:
    """One exchange with the coach, finished by ``deadline``."""
    register_secrets(secrets_of(settings))
    endpoint = endpoint_of(settings.coach_url)
    token = settings.coach_token.get_secret_value()
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = Request(
        url=endpoint.post_url,
        payload=_body(endpoint, document),
        what=f"the {endpoint.kind} coach",
        headers=headers,
        connect_timeout_s=settings.coach_connect_timeout_seconds,
        retries=settings.coach_retries,
        max_body_bytes=API_MAX_BYTES if endpoint.kind == "api" else MODEL_MAX_BYTES,
        proxy=settings.coach_proxy or None,
    )

    started = time.monotonic()
    reply = post_json(request, deadline)
    if not 200 <= reply.status < 300:
        raise OutboundError(f"{endpoint.label} answered HTTP {reply.status}")
    advice = parse_advice(_advice_text(endpoint, reply.body), variant_names)
    elapsed_s = time.monotonic() - started
    log.info(
        "%s advises %s%s (%.1f s)",
        endpoint.label,
        advice.advice,
        f" {advice.variant}" if advice.variant else "",
        elapsed_s,
    )
    return CoachAnswer(advice, endpoint.kind, reply.status, reply.attempts, elapsed_s)
