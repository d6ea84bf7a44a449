"""The load loop that runs in the probe's own process (``python -m smart_tui.probe``).

Requests are scheduled at fixed (or Poisson) intended times and written on keep-alive
connections, at most ``connections`` of them, by a bare asyncio Protocol on uvloop with
httptools parsing. Each finished second goes to stdout as a length-prefixed pickle
frame (see ``write_frame``); the parent builds statistics from them."""

from __future__ import annotations

import asyncio
import os
import pickle
import random
import signal
import socket
import struct
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from smart_tui.hostwatch import HostReader, HostSample, LoopLagWatch, flag_reasons
from smart_tui.hostwatch import Thresholds as HostThresholds
from smart_tui.probe.model import (
    STATUS_CONN_ERROR,
    STATUS_TIMEOUT,
    STATUS_UNSENT,
    USER_AGENT,
    ProbeConfig,
)
from smart_tui.probe.timerfd import TimerFd

NS_PER_S = 1_000_000_000
FRAME_HEADER = struct.Struct(">I")
# How often deadlines are checked and finished seconds are sent; timeouts are thus
# detected up to this late, which only matters for requests already counted as failed.
SWEEP_S = 0.02
# Requests just before a stall, or queued during it and sent in the catch-up burst,
# are skewed too, so flagged spans are widened by this much on both sides.
STALL_GUARD_NS = 100_000_000
# A closed-loop connection whose connect was refused waits this long before trying
# again, so a dead target does not spin a CPU.
RECONNECT_BACKOFF_S = 0.01
# The first second decides whether the target is reachable at all.
REACHABILITY_WINDOW_NS = NS_PER_S


def write_frame(out: Callable[[bytes], object], message: tuple[str, Any]) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out(FRAME_HEADER.pack(len(body)) + body)


class _Bucket:
    """Requests whose intended send time falls in one second."""

    __slots__ = (
        "intended_ns",
        "latency_ns",
        "outstanding",
        "sched_lag_us",
        "second",
        "status",
    )

    def __init__(self, second: int) -> None:
        self.second = second
        self.intended_ns = array("q")  # from the probe's start
        self.latency_ns = array("q")
        self.status = array("h")
        self.sched_lag_us = array("i")  # how late the scheduler itself was
        self.outstanding = 0

    def add(self, intended_ns: int, sched_lag_ns: int) -> int:
        self.intended_ns.append(intended_ns)
        self.latency_ns.append(0)
        self.status.append(STATUS_UNSENT)
        self.sched_lag_us.append(sched_lag_ns // 1000)  # < 35 min fits an int32
        self.outstanding += 1
        return len(self.intended_ns) - 1


_Request = tuple[_Bucket, int]


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    __slots__ = (
        "engine",
        "got_bytes",
        "parser",
        "req",
        "retried",
        "served",
        "status",
        "transport",
    )

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.req: _Request | None = None
        self.served = 0
        self.status = 0
        self.got_bytes = False
        self.retried = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, req: _Request) -> None:
        assert self.transport is not None
        self.req = req
        self.got_bytes = False
        self.transport.write(self.engine.request_bytes)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.engine.on_broken(self)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        self.served += 1
        self.engine.on_response(self, self.status, self.parser.should_keep_alive())

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.on_lost(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Engine:
    """Runs one probe window on the current (uv)loop and streams seconds out."""

    def __init__(
        self,
        config: ProbeConfig,
        out: Callable[[bytes], object],
        thresholds: HostThresholds | None = None,
    ) -> None:
        self.cfg = config
        self.out = out
        self.parent_pid = os.getppid()
        self.thresholds = thresholds or HostThresholds()
        parts = urlsplit(config.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host_header = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"GET {path} HTTP/1.1", f"Host: {host_header}"]
        names = {k.lower() for k in config.headers}
        if "user-agent" not in names:
            lines.append(f"User-Agent: {USER_AGENT}")
        lines += [f"{k}: {v}" for k, v in config.headers.items()]
        self.request_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

        self.closed_loop = config.rate_rps == 0
        self.timeout_ns = int(config.timeout_s * NS_PER_S)
        self.end_ns = int(config.total_s * NS_PER_S)
        self.warmup_seconds = config.warmup_seconds
        self.t0_ns = 0
        self.buckets: deque[_Bucket] = deque()
        self.queue: deque[_Request] = deque()
        self.idle: list[_Conn] = []
        self.busy: set[_Conn] = set()
        self.nconns = 0  # connecting + connected
        self.completions_by_second: dict[int, int] = {}
        self.ok_responses = 0
        self.conn_errors = 0
        self.unreachable = False
        self.stopping = False
        self.next_ns = 0.0
        self.rng = random.Random()
        # Whole nanoseconds, so the periodic timer and the schedule never drift
        # apart (a tick landing just before its request would delay it a period).
        self.period_ns = 0 if self.closed_loop else round(NS_PER_S / config.rate_rps)
        self.periodic = False
        self.seq = 0
        self.timer: TimerFd | None = None
        self.scheduler = "closed-loop"
        self.host_reader = HostReader()
        self.host_by_second: dict[int, HostSample] = {}
        self.host_second = -1
        self.finished: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lag: LoopLagWatch | None = None
        self.sweep_handle: asyncio.TimerHandle | None = None
        self.tick_handle: asyncio.TimerHandle | None = None

    # -- time ---------------------------------------------------------------------
    def now_ns(self) -> int:
        return time.monotonic_ns() - self.t0_ns

    # -- lifecycle ----------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.finished = loop.create_future()
        self.t0_ns = time.monotonic_ns()
        self.lag = LoopLagWatch(origin_ns=self.t0_ns, stall_ms=self.thresholds.stall_ms)
        self.lag.start(loop)
        self.host_reader.sample()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        # A bug in a callback must end the run with an error, not hang it.
        loop.set_exception_handler(self.on_loop_error)
        write_frame(self.out, ("hello", {"pid": os.getpid(), "t0_ns": self.t0_ns}))
        if self.closed_loop:
            for _ in range(self.cfg.connections):
                self.open_conn()
        else:
            self.next_ns = 0.0
            try:
                self.timer = TimerFd()
                loop.add_reader(self.timer.fd, self.on_timerfd)
                self.scheduler = "timerfd"
            except (OSError, AttributeError):
                self.timer = None
                self.scheduler = "loop-timer"
            self.schedule_due()
        self.sweep()
        try:
            await self.finished
        finally:
            self.shutdown()
        write_frame(
            self.out,
            (
                "done",
                {
                    "stopped_early": self.stopping,
                    "scheduler": self.scheduler,
                    "unreachable": self.unreachable,
                },
            ),
        )

    def on_loop_error(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        exc = context.get("exception") or RuntimeError(str(context.get("message")))
        if self.finished is not None and not self.finished.done():
            self.finished.set_exception(exc)

    def request_stop(self) -> None:
        """Stop sending; requests in flight still finish (or time out)."""
        if not self.stopping:
            self.stopping = True
            self.end_ns = min(self.end_ns, self.now_ns())

    def shutdown(self) -> None:
        if self.lag is not None:
            self.lag.stop()
        for handle in (self.sweep_handle, self.tick_handle):
            if handle is not None:
                handle.cancel()
        if self.timer is not None and self.loop is not None:
            self.loop.remove_reader(self.timer.fd)
            self.timer.close()
            self.timer = None
        for conn in [*self.idle, *self.busy]:
            conn.req = None
            conn.close()

    # -- scheduling ---------------------------------------------------------------
    def on_timerfd(self) -> None:
        assert self.timer is not None
        self.timer.drain()
        self.schedule_due()

    def schedule_due(self) -> None:
        """Dispatch every request whose intended time has come, then re-arm."""
        now = self.now_ns()
        end = self.end_ns
        while self.next_ns <= now and self.next_ns < end:
            intended = int(self.next_ns)
            self.dispatch(self.new_request(intended, now - intended))
            self.seq += 1
            if self.cfg.poisson:
                self.next_ns += self.rng.expovariate(1.0) * self.period_ns
            else:
                # From the sequence number, so rounding never drifts the rate.
                self.next_ns = self.seq * self.period_ns
        if self.next_ns >= end or self.stopping:
            if self.timer is not None and self.periodic:
                self.timer.disarm()
                self.periodic = False
            return
        if self.timer is not None:
            if not self.cfg.poisson:
                if not self.periodic:
                    self.timer.arm_at(self.t0_ns + int(self.next_ns), self.period_ns)
                    self.periodic = True
            else:
                self.timer.arm_at(self.t0_ns + int(self.next_ns))
        else:
            assert self.loop is not None
            delay = max(0.0, (self.next_ns - self.now_ns()) / NS_PER_S)
            self.tick_handle = self.loop.call_later(delay, self.schedule_due)

    def new_request(self, intended_ns: int, sched_lag_ns: int) -> _Request:
        second = intended_ns // NS_PER_S
        if not self.buckets or self.buckets[-1].second < second:
            # Empty seconds (very low rates) still get a bucket, so every second of
            # the window is reported.
            start = self.buckets[-1].second + 1 if self.buckets else 0
            for s in range(start, second + 1):
                self.buckets.append(_Bucket(s))
        bucket = self.buckets[-1]
        return bucket, bucket.add(intended_ns, sched_lag_ns)

    def dispatch(self, req: _Request) -> None:
        if self.idle:
            conn = self.idle.pop()
            self.busy.add(conn)
            conn.send(req)
            return
        self.queue.append(req)
        if self.nconns < self.cfg.connections:
            self.open_conn()

    # -- connections --------------------------------------------------------------
    def open_conn(self) -> None:
        assert self.loop is not None
        self.nconns += 1
        self.loop.create_task(self.connect())

    async def connect(self) -> None:
        assert self.loop is not None
        conn = _Conn(self)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, self.host, self.port),
                timeout=self.cfg.timeout_s,
            )
        except (OSError, TimeoutError):
            self.nconns -= 1
            self.on_connect_failed()
            return
        if self.stopping and self.now_ns() >= self.end_ns and not self.queue:
            self.nconns -= 1
            conn.close()
            return
        self.next_for(conn)

    def on_connect_failed(self) -> None:
        now = self.now_ns()
        if self.closed_loop:
            # The failed attempt is itself the request this connection would send.
            if now < self.end_ns:
                req = self.new_request(now, 0)
                self.record(req, STATUS_CONN_ERROR, now)
                assert self.loop is not None
                self.nconns += 1
                self.loop.call_later(RECONNECT_BACKOFF_S, self.retry_connect)
            return
        if self.queue:
            self.record(self.queue.popleft(), STATUS_CONN_ERROR, now)
        if self.queue and self.nconns < self.cfg.connections:
            self.open_conn()

    def retry_connect(self) -> None:
        assert self.loop is not None
        self.nconns -= 1
        if self.now_ns() < self.end_ns:
            self.open_conn()

    def next_for(self, conn: _Conn) -> None:
        """Give a free connection its next request, or park it."""
        if self.closed_loop:
            now = self.now_ns()
            if now < self.end_ns:
                self.busy.add(conn)
                conn.send(self.new_request(now, 0))
                return
        elif self.queue:
            self.busy.add(conn)
            conn.send(self.queue.popleft())
            return
        self.idle.append(conn)

    def on_response(self, conn: _Conn, status: int, keep_alive: bool) -> None:
        req = conn.req
        if req is None:
            return
        conn.req = None
        self.busy.discard(conn)
        self.record(req, status, self.now_ns())
        self.ok_responses += 1
        if not keep_alive:
            conn.close()  # connection_lost does the accounting and replaces it
            return
        self.next_for(conn)

    def on_broken(self, conn: _Conn) -> None:
        req = conn.req
        conn.req = None
        if req is not None:
            self.record(req, STATUS_CONN_ERROR, self.now_ns())
        conn.close()

    def on_lost(self, conn: _Conn) -> None:
        self.nconns -= 1
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        req = conn.req
        conn.req = None
        if req is not None:
            if not conn.got_bytes and conn.served > 0 and not conn.retried:
                # The server closed an idle keep-alive connection as we reused it;
                # any client retries that once on a fresh connection.
                self.queue.appendleft(req)
            else:
                self.record(req, STATUS_CONN_ERROR, self.now_ns())
        if self.closed_loop:
            if self.now_ns() < self.end_ns:
                self.open_conn()
        elif self.queue and self.nconns < self.cfg.connections:
            self.open_conn()

    def record(self, req: _Request, status: int, now_ns: int) -> None:
        bucket, i = req
        if status <= 0:
            bucket.latency_ns[i] = self.timeout_ns
            if status == STATUS_CONN_ERROR:
                self.conn_errors += 1
        else:
            bucket.latency_ns[i] = now_ns - bucket.intended_ns[i]
        bucket.status[i] = status
        bucket.outstanding -= 1
        sec = now_ns // NS_PER_S
        self.completions_by_second[sec] = self.completions_by_second.get(sec, 0) + 1

    # -- housekeeping -------------------------------------------------------------
    def sweep(self) -> None:
        """Time out late requests, emit finished seconds, decide when we are done."""
        assert self.loop is not None and self.lag is not None
        self.lag.observe()
        now = self.now_ns()
        self.sample_host(now)
        for conn in list(self.busy):
            req = conn.req
            if req is not None and now - req[0].intended_ns[req[1]] >= self.timeout_ns:
                conn.req = None
                self.busy.discard(conn)
                self.record(req, STATUS_TIMEOUT, now)
                conn.close()
        queue = self.queue
        while queue and now - queue[0][0].intended_ns[queue[0][1]] >= self.timeout_ns:
            self.record(queue.popleft(), STATUS_UNSENT, now)
        if self.stopping:
            # Nothing more will be sent; queued requests are dropped as unsent.
            while queue:
                self.record(queue.popleft(), STATUS_UNSENT, now)
        if (
            not self.unreachable
            and now >= REACHABILITY_WINDOW_NS
            and self.ok_responses == 0
            and self.conn_errors > 0
            and not self.busy
        ):
            self.unreachable = True
            self.request_stop()
        if os.getppid() != self.parent_pid:
            self.request_stop()  # the caller is gone; nobody will read the results
        self.emit_finished(now)
        if now >= self.end_ns + self.timeout_ns + STALL_GUARD_NS + NS_PER_S:
            # Every request has timed out by now; anything left is a bookkeeping
            # bug, and ending beats hanging the caller.
            raise RuntimeError(
                f"probe could not finish: {len(self.buckets)} open seconds"
            )
        if now >= self.end_ns and not self.buckets and not self.busy:
            assert self.finished is not None
            if not self.finished.done():
                self.finished.set_result(None)
            return
        self.sweep_handle = self.loop.call_later(SWEEP_S, self.sweep)

    def sample_host(self, now_ns: int) -> None:
        second = now_ns // NS_PER_S
        if second != self.host_second:
            if self.host_second >= 0:
                self.host_by_second[self.host_second] = self.host_reader.sample()
            self.host_second = second

    def emit_finished(self, now_ns: int) -> None:
        assert self.lag is not None
        while self.buckets:
            bucket = self.buckets[0]
            end_of_second = (bucket.second + 1) * NS_PER_S
            complete = bucket.outstanding == 0 and (
                now_ns >= end_of_second + STALL_GUARD_NS
                or (now_ns >= self.end_ns and end_of_second >= self.end_ns)
            )
            if not complete:
                return
            self.buckets.popleft()
            self.emit(bucket)

    def emit(self, bucket: _Bucket) -> None:
        assert self.lag is not None
        second = bucket.second
        host = self.host_by_second.pop(second, None)
        stalls = self.lag.stalls_touching(second, STALL_GUARD_NS)
        if host is not None and self.closed_loop:
            # A closed loop saturates the host on purpose; its own CPU pressure is
            # no reason to distrust a second. Steal still is.
            host_for_flags: HostSample | None = HostSample(
                host.steal_pct, None, host.procs_running
            )
        else:
            host_for_flags = host
        reasons = flag_reasons(stalls, host_for_flags, self.thresholds)
        completions = self.completions_by_second.pop(second, 0)
        end_ns = min((second + 1) * NS_PER_S, max(self.end_ns, 1))
        span_s = max(1e-9, (end_ns - second * NS_PER_S) / NS_PER_S)
        payload = {
            "second": second,
            "span_s": span_s,
            "warmup": second < self.warmup_seconds,
            "intended_ns": bucket.intended_ns.tobytes(),
            "latency_ns": bucket.latency_ns.tobytes(),
            "status": bucket.status.tobytes(),
            "sched_lag_us": bucket.sched_lag_us.tobytes(),
            "completions": completions,
            "lag_ms": self.lag.lag_ms(second),
            "flag_reasons": reasons,
            "steal_pct": None if host is None else host.steal_pct,
            "cpu_pressure_pct": None if host is None else host.cpu_pressure_pct,
        }
        self.lag.forget_before(second - 1)
        write_frame(self.out, ("second", payload))


def child_main() -> int:
    """Entry of the probe process: config JSON on stdin, frames on stdout."""
    import json

    raw = json.loads(sys.stdin.read())
    config = ProbeConfig(**raw["config"])
    thresholds = HostThresholds(**raw.get("thresholds", {}))
    out_fd = os.dup(1)
    # Nothing but frames may reach the parent's pipe, whatever a library prints.
    os.dup2(2, 1)
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(out_fd, "wb", buffering=0)
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
        try:
            await Engine(config, transport.write, thresholds).run()
        except Exception as exc:
            write_frame(transport.write, ("error", {"message": repr(exc)}))
            raise
        finally:
            # Let the buffered frames reach the parent before the process exits.
            while transport.get_write_buffer_size():
                await asyncio.sleep(0.005)
            transport.close()

    runner(main())
    return 0
