"""The lab backend: a keep-alive HTTP/1.1 server on 127.0.0.1 (uvloop + httptools).

``/app/...`` answers a small JSON body after ``latency_ms`` plus or minus ``jitter_ms``,
or a 500 with probability ``error_pct``; draws come from one seeded generator, in
request order. ``/__lab/state`` reports and ``/__lab/set?...`` changes the behaviour
live; only ``smart_tui.lab.Lab`` calls them. Run: ``python -m smart_tui.lab.backend``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import httptools
import uvloop

HOST = "127.0.0.1"
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 500: b"Server Error"}


@dataclass
class Behaviour:
    """What the backend does now; changed in place by ``/__lab/set``."""

    latency_ms: float
    jitter_ms: float
    error_pct: float
    rng: random.Random
    stall_until: float = 0.0  # loop.time() before which no response leaves
    requests: int = 0
    errors: int = 0

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "error_pct": self.error_pct,
            "stall_s_left": round(max(0.0, self.stall_until - now), 3),
            "requests": self.requests,
            "errors": self.errors,
        }

    def update(self, query: dict[str, list[str]], now: float) -> None:
        """Apply ``/__lab/set`` parameters; ValueError names the first bad one."""
        values: dict[str, float] = {}
        for key, raw in query.items():
            if key not in ("latency_ms", "jitter_ms", "error_pct", "stall_s"):
                raise ValueError(f"unknown parameter {key!r}")
            value = float(raw[-1])
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number >= 0")
            if key == "error_pct" and value > 100:
                raise ValueError("error_pct must be <= 100")
            values[key] = value
        self.latency_ms = values.get("latency_ms", self.latency_ms)
        self.jitter_ms = values.get("jitter_ms", self.jitter_ms)
        self.error_pct = values.get("error_pct", self.error_pct)
        if "stall_s" in values:
            self.stall_until = now + values["stall_s"]


def _response(status: int, payload: dict[str, Any], keep_alive: bool) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: %s\r\n\r\n"
    ) % (status, _REASONS[status], len(body), b"keep-alive" if keep_alive else b"close")
    return head + body


class Connection(asyncio.Protocol):
    """One client connection; answers in request order even when pipelined."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        # One slot per request; a slot is filled when its delay ends and slots are
        # written from the left, so a slow request holds back later ones.
        self.slots: deque[list[bytes | None]] = deque()
        self.close_after: list[bytes | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._queue(_response(400, {"error": "upgrade refused"}, False), 0.0, True)
        except httptools.HttpParserError:
            self._queue(_response(400, {"error": "bad request"}, False), 0.0, True)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        keep_alive = bool(self.parser.should_keep_alive())
        parsed = httptools.parse_url(self.url)
        path = (parsed.path or b"/").decode("latin-1")
        query = urllib.parse.parse_qs((parsed.query or b"").decode("latin-1"))
        now = self.loop.time()
        behaviour = self.behaviour

        if path == "/__lab/state":
            self._queue(_response(200, behaviour.as_dict(now), keep_alive), 0.0)
        elif path == "/__lab/set":
            try:
                behaviour.update(query, now)
            except ValueError as exc:
                self._queue(_response(400, {"error": str(exc)}, keep_alive), 0.0)
            else:
                self._queue(_response(200, behaviour.as_dict(now), keep_alive), 0.0)
        elif path.startswith("/app/"):
            behaviour.requests += 1
            jitter_ms = behaviour.rng.uniform(-behaviour.jitter_ms, behaviour.jitter_ms)
            delay_s = max(0.0, behaviour.latency_ms + jitter_ms) / 1000.0
            if behaviour.rng.random() * 100.0 < behaviour.error_pct:
                behaviour.errors += 1
                payload = _response(
                    500, {"error": "injected", "path": path}, keep_alive
                )
            else:
                payload = _response(200, {"item": path, "ok": True}, keep_alive)
            self._queue(payload, delay_s, stallable=True)
        else:
            self._queue(_response(404, {"error": "not found"}, keep_alive), 0.0)
        if not keep_alive:
            self.close_after = self.slots[-1]

    def _queue(
        self,
        payload: bytes,
        delay_s: float,
        close: bool = False,
        stallable: bool = False,
    ) -> None:
        slot: list[bytes | None] = [None]
        self.slots.append(slot)
        if close:
            self.close_after = slot
        self.loop.call_later(delay_s, self._fill, slot, payload, stallable)

    def _fill(self, slot: list[bytes | None], payload: bytes, stallable: bool) -> None:
        # A stall set after this response was scheduled still holds it back.
        if stallable and self.loop.time() < self.behaviour.stall_until:
            self.loop.call_at(
                self.behaviour.stall_until, self._fill, slot, payload, True
            )
            return
        slot[0] = payload
        while self.slots and self.slots[0][0] is not None and self.transport:
            done = self.slots.popleft()
            self.transport.write(done[0] or b"")
            if done is self.close_after:
                self.transport.close()
                self.transport = None  # later pipelined requests go unanswered
                self.slots.clear()


async def serve(port: int, behaviour: Behaviour) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(behaviour), HOST, port, backlog=1024, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--jitter-ms", type=float, default=2.0)
    parser.add_argument("--error-pct", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    behaviour = Behaviour(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        error_pct=args.error_pct,
        rng=random.Random(args.seed),
    )
    uvloop.run(serve(args.port, behaviour))


if __name__ == "__main__":
    main()
