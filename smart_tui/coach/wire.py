"""Outbound HTTP for the coach and the notifiers: HTTPS unless the host is loopback,
no proxy unless one is named, a connect deadline and a total deadline, a capped
body, bounded retries. Failures come back as ``OutboundError`` whose text names the
host, never a path, query or header: webhook paths and tokens are secrets. Importing
it filters httpx's loggers, which print full URLs, through ``register_secrets``."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from smart_tui.errors import ExitCode, SmartError

log = logging.getLogger("smart_tui.coach.wire")

MASK = "****"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
BACKOFF_FIRST_S = 0.25
USER_AGENT = "smart-tui"


class OutboundError(SmartError):
    """A request to the coach or a webhook failed; the text is safe to show."""

    exit_code = ExitCode.TARGET_UNREACHABLE
    title = "outbound"


class Scrubber:
    """Replaces every known secret in a text with ``****``.

    A URL secret also registers its path and query, since a library may print the
    URL re-encoded or split (Slack and Discord put the secret in the path)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            self._secrets.update(_secret_parts(secret))

    def __call__(self, text: str) -> str:
        # Longest first, so a URL goes before the path it contains.
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text


def _secret_parts(secret: str) -> set[str]:
    if len(secret) < 4:  # too short to mask without mangling ordinary text
        return set()
    parts = {secret}
    try:
        split = urlsplit(secret)
    except ValueError:
        return parts
    if split.scheme and split.netloc:
        if len(split.path) > 1:
            parts.add(split.path)
        if split.query:
            parts.add(split.query)
        if "@" in split.netloc:
            parts.add(split.netloc.rpartition("@")[0])
    return {part for part in parts if len(part) >= 4}


class _RedactFilter(logging.Filter):
    """Scrubs httpx's own request log lines, which print the full URL."""

    def __init__(self) -> None:
        super().__init__()
        self.scrub = Scrubber()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        return True


_REDACT = _RedactFilter()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_REDACT)


def register_secrets(secrets: Iterable[str]) -> Scrubber:
    """A scrubber for ``secrets``; they are also scrubbed from httpx's logs."""
    listed = [secret for secret in secrets if secret]
    _REDACT.scrub.add(listed)
    return Scrubber(listed)


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def safe_label(url: str) -> str:
    """``scheme://host:port`` of a URL: enough to say where, never a secret."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}"


def require_safe_url(url: str, what: str) -> None:
    """Refuse plain HTTP beyond loopback: a token or webhook would cross the
    network in clear text."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        message = f"{what} is not a valid URL; fix it in smart.conf"
        raise OutboundError(message) from None
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and is_loopback(host):
        return
    raise OutboundError(
        f"{what} must use https:// unless its host is loopback "
        f"(127.0.0.1, ::1, localhost); {safe_label(url)} is not; fix it in smart.conf"
    )


@dataclass(frozen=True)
class Deadline:
    """A point in ``time.monotonic()`` after which no more waiting is allowed."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


@dataclass(frozen=True)
class Reply:
    """What came back: status, the (capped) body and how many attempts it took."""

    status: int
    body: bytes
    attempts: int


@dataclass(frozen=True)
class Request:
    """One POST of a JSON document, with its limits."""

    url: str
    payload: Mapping[str, Any]
    what: str  # "the coach", "the Slack webhook": used in error messages
    headers: Mapping[str, str]
    connect_timeout_s: float
    retries: int
    max_body_bytes: int = 256 * 1024
    proxy: str | None = None


def post_json(request: Request, deadline: Deadline) -> Reply:
    """POST with retries on timeouts, connection errors and 408/429/5xx, backing off
    between attempts, all before ``deadline``. Raises OutboundError."""
    require_safe_url(request.url, request.what)
    headers = {"User-Agent": USER_AGENT, **request.headers}
    last_error = ""
    with httpx.Client(
        trust_env=False, proxy=request.proxy or None, follow_redirects=False
    ) as client:
        attempts = request.retries + 1
        for attempt in range(1, attempts + 1):
            if deadline.remaining() <= 0.01:
                last_error = last_error or f"{request.what}: no time left to ask"
                break
            try:
                reply = _attempt(client, request, headers, deadline, attempt)
            except OutboundError as exc:
                last_error = exc.message
            else:
                if reply.status not in RETRY_STATUSES or attempt == attempts:
                    return reply
                last_error = f"{request.what} answered HTTP {reply.status}"
            pause_s = BACKOFF_FIRST_S * 2 ** (attempt - 1)
            if attempt == attempts or deadline.remaining() <= pause_s:
                break
            log.info("%s; retrying (attempt %d of %d)", last_error, attempt, attempts)
            time.sleep(pause_s)
    raise OutboundError(last_error)


def _attempt(
    client: httpx.Client,
    request: Request,
    headers: Mapping[str, str],
    deadline: Deadline,
    attempt: int,
) -> Reply:
    remaining_s = deadline.remaining()
    timeout = httpx.Timeout(
        remaining_s, connect=min(request.connect_timeout_s, remaining_s)
    )
    where = f"{request.what} at {safe_label(request.url)}"
    try:
        with client.stream(
            "POST", request.url, json=request.payload, headers=headers, timeout=timeout
        ) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > request.max_body_bytes:
                    raise OutboundError(
                        f"{where} sent more than {request.max_body_bytes} bytes"
                    )
                # Each read may wait up to the remaining time; check between reads.
                if deadline.remaining() <= 0:
                    raise OutboundError(f"{where} was still sending at the deadline")
            return Reply(response.status_code, bytes(body), attempt)
    except httpx.ConnectTimeout:
        raise OutboundError(
            f"{where}: no connection within {timeout.connect:.1f} s"
        ) from None
    except httpx.TimeoutException:
        raise OutboundError(f"{where}: no answer within {remaining_s:.1f} s") from None
    except httpx.ProxyError:
        raise OutboundError(f"{where}: the proxy (COACH_PROXY) failed") from None
    except httpx.ConnectError as exc:
        # httpx's text is the OS reason, e.g. "[Errno 111] Connection refused".
        raise OutboundError(f"{where}: cannot connect ({_reason(exc)})") from None
    except httpx.HTTPError as exc:
        raise OutboundError(f"{where}: {type(exc).__name__}") from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    # Only the OS's reason; anything URL-like is dropped rather than trusted.
    return text if "://" not in text and len(text) < 200 else type(exc).__name__
