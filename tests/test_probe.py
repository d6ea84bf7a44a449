"""The load probe against a real nginx on 127.0.0.1 that each test module starts.

Server stalls are made by SIGSTOPping nginx's worker, slow answers by ``limit_req``
delays, so no extra backend is needed. No assertion here is about speed; speed is
measured against wrk and hey in bench/probe_bench.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest

from smart_tui.errors import ConfigError, TargetUnreachable
from smart_tui.hostwatch import HostReader, LoopLagWatch, Thresholds, flag_reasons
from smart_tui.probe import (
    ProbeConfig,
    SecondStats,
    decode_reservoir,
    format_summary,
    merged_histogram,
    run_probe,
)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx not found")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Nginx:
    port: int
    proc: subprocess.Popen[bytes]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def worker(self) -> psutil.Process:
        return psutil.Process(self.proc.pid).children()[0]


def start_nginx(prefix: Path) -> Nginx:
    port = free_port()
    (prefix / "html").mkdir(parents=True)
    (prefix / "html" / "1k.txt").write_bytes(b"x" * 1024)
    user = "user root;" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"""
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000;
    # limit_req delays requests past the rate: a server that is slow on demand.
    limit_req_zone $binary_remote_addr zone=slow:1m rate=20r/s;
    limit_req_zone $binary_remote_addr zone=crawl:1m rate=2r/s;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/html;
        location = /err {{ return 500; }}
        location /slow/ {{ limit_req zone=slow burst=100000; alias {prefix}/html/; }}
        location /crawl/ {{ limit_req zone=crawl burst=100000; alias {prefix}/html/; }}
    }}
}}
"""
    )
    proc = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"nginx did not start: {(prefix / 'error.log').read_text()}")
    return Nginx(port, proc)


def stop_nginx(nginx: Nginx) -> None:
    if nginx.proc.poll() is None:
        nginx.proc.terminate()
        try:
            nginx.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            nginx.proc.kill()
            nginx.proc.wait()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    server = start_nginx(tmp_path_factory.mktemp("nginx"))
    yield server
    stop_nginx(server)


def later(delay_s: float, action: object) -> threading.Timer:
    timer = threading.Timer(delay_s, action)  # type: ignore[arg-type]
    timer.daemon = True
    timer.start()
    return timer


def test_fixed_rate_is_delivered_and_seconds_arrive_live(nginx: Nginx) -> None:
    started = time.monotonic()
    arrivals: list[tuple[float, SecondStats]] = []
    config = ProbeConfig(nginx.url("/1k.txt"), rate_rps=400, duration_s=3, warmup_s=1)
    result = run_probe(
        config, on_second=lambda s: arrivals.append((time.monotonic(), s))
    )
    returned = time.monotonic()
    summary = result.summary()

    assert not result.fell_behind, result.fell_behind_reason
    assert result.scheduler == "timerfd"
    # Fixed spacing: exactly rate x duration requests are intended in the window.
    assert sum(s.intended for s in result.per_second if not s.warmup) == 1200
    assert sum(s.status_2xx for s in result.per_second) == 1600
    assert abs(result.achieved_rps - 400) / 400 < 0.02
    assert summary["conn_errors"] == summary["timeouts"] == summary["unsent"] == 0
    assert [s.second for s in result.per_second] == [0, 1, 2, 3]
    assert result.per_second[0].warmup and not result.per_second[1].warmup
    # Live: the first second reached us long before the 4 s window was over.
    assert arrivals[0][0] - started < 3.0 < returned - started
    assert "Achieved rate" in format_summary(result)
    assert np.all(np.diff(result.t_s) >= 0)
    assert json.dumps(summary, default=str)


def test_poisson_rate_averages_to_intended(nginx: Nginx) -> None:
    config = ProbeConfig(nginx.url("/1k.txt"), rate_rps=300, duration_s=3, poisson=True)
    result = run_probe(config)
    gaps = np.diff(result.t_s)
    assert 250 < result.latencies_ms.size < 350 * 3
    # Exponential gaps: the spread is about the mean, unlike fixed spacing.
    assert 0.6 < gaps.std() / gaps.mean() < 1.4


def test_server_stall_reaches_p99_in_open_loop(nginx: Nginx) -> None:
    worker = nginx.worker
    config = ProbeConfig(nginx.url("/1k.txt"), 300, duration_s=5, timeout_s=5)

    def stall() -> None:
        worker.suspend()
        time.sleep(2.0)
        worker.resume()

    later(1.0, stall)
    try:
        result = run_probe(config)
    finally:
        worker.resume()
    all_p99 = float(np.percentile(result.latencies_ms, 99))
    assert all_p99 >= 1000, format_summary(result)
    assert result.latencies_ms.max() >= 1500
    # Requests arriving during the stall are timed from their intended send time,
    # so their latency falls as the stall nears its end instead of all being small.
    in_stall = (result.t_s > 1.3) & (result.t_s < 2.7)
    assert np.median(result.latencies_ms[in_stall]) > 300
    assert (result.statuses == 200).all()


def test_refused_target_raises_target_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(TargetUnreachable) as info:
        run_probe(ProbeConfig(url, rate_rps=50, duration_s=5))
    assert url in str(info.value) and "smart-tui lab start" in str(info.value)


def test_target_going_down_mid_window_counts_conn_errors(tmp_path: Path) -> None:
    server = start_nginx(tmp_path / "ngx")
    later(1.5, lambda: stop_nginx(server))
    try:
        result = run_probe(ProbeConfig(server.url("/1k.txt"), 100, duration_s=3))
    finally:
        stop_nginx(server)
    summary = result.summary()
    assert summary["status_2xx"] > 100
    assert summary["conn_errors"] > 50


def test_slow_backend_with_one_connection_falls_behind(nginx: Nginx) -> None:
    config = ProbeConfig(
        nginx.url("/slow/1k.txt"), 200, duration_s=2, connections=1, timeout_s=1
    )
    result = run_probe(config)
    assert result.fell_behind
    assert "could be sent" in result.fell_behind_reason
    assert result.summary()["unsent"] > 100


def test_5xx_and_timeouts_are_counted_apart(nginx: Nginx) -> None:
    errors = run_probe(ProbeConfig(nginx.url("/err"), 100, duration_s=1.5)).summary()
    assert errors["status_5xx"] == errors["requests"] == 150
    assert errors["timeouts"] == errors["conn_errors"] == 0

    config = ProbeConfig(
        nginx.url("/crawl/1k.txt"), 20, duration_s=2, connections=50, timeout_s=0.3
    )
    slow = run_probe(config)
    summary = slow.summary()
    assert summary["timeouts"] > 10
    assert summary["status_5xx"] == summary["conn_errors"] == 0
    # Failures carry the timeout as their latency.
    assert np.allclose(slow.latencies_ms[slow.statuses == -1], 300)


def test_sigstopped_probe_seconds_are_flagged_not_scored(nginx: Nginx) -> None:
    def freeze(pid: int) -> None:
        def stop_300ms() -> None:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.3)
            os.kill(pid, signal.SIGCONT)

        later(1.4, stop_300ms)

    config = ProbeConfig(nginx.url("/1k.txt"), 300, duration_s=4)
    result = run_probe(config, on_started=freeze)
    flagged = {s.second: s.flag_reason for s in result.per_second if s.flagged}
    assert 1 in flagged, [(s.second, s.lag_ms) for s in result.per_second]
    assert "stalled" in flagged[1]
    assert 1 in result.excluded_seconds
    stopped = result.per_second[1]
    assert stopped.lag_ms >= 250
    # The stall inflated the raw latencies, but the scored summary leaves it out.
    assert result.latencies_ms.max() >= 200
    assert result.summary()["max_ms"] < 200


def test_storage_record_is_bounded_and_recomputable(nginx: Nginx) -> None:
    config = ProbeConfig(nginx.url("/1k.txt"), 500, duration_s=2)
    result = run_probe(config)
    stored = result.to_storage(reservoir_size=300)
    text = json.dumps(stored)
    assert len(text) < 60_000
    hist = merged_histogram([s["hdr"] for s in stored["seconds"]], config.timeout_s)
    assert hist.get_total_count() == 1000
    raw_p90_us = np.percentile(result.latencies_ms, 90) * 1000
    assert abs(hist.get_value_at_percentile(90) - raw_p90_us) <= raw_p90_us * 0.01 + 2
    t_s, lat_ms, status = decode_reservoir(stored["reservoir"])
    assert t_s.size == lat_ms.size == status.size == 300
    assert np.all(np.diff(t_s) >= 0)


def test_stop_event_ends_the_window_early(nginx: Nginx) -> None:
    stop = threading.Event()
    started = time.monotonic()
    # Stop once the first whole second is in, however long the start-up took.
    result = run_probe(
        ProbeConfig(nginx.url("/1k.txt"), 100, 30),
        on_second=lambda stats: stop.set(),
        stop=stop,
    )
    assert time.monotonic() - started < 10
    assert result.stopped_early and result.latencies_ms.size >= 100


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        run_probe(ProbeConfig("https://127.0.0.1/", 10, 1))
    with pytest.raises(ConfigError):
        run_probe(ProbeConfig("http://127.0.0.1:1/", -1, 1))


def test_hostwatch_reads_steal_and_pressure(tmp_path: Path) -> None:
    (tmp_path / "pressure").mkdir()

    def write(busy: int, steal: int, total_psi_us: int) -> None:
        (tmp_path / "stat").write_text(
            f"cpu  {busy} 0 {busy} 700 0 0 0 {steal} 0 0\nprocs_running 3\n"
        )
        (tmp_path / "pressure" / "cpu").write_text(
            f"some avg10=0.00 avg60=0.00 avg300=0.00 total={total_psi_us}\n"
        )

    write(100, 0, 0)
    reader = HostReader(str(tmp_path))
    assert reader.sample().steal_pct is None
    write(175, 50, 10_000_000)  # 200 jiffies passed, 50 of them stolen
    sample = reader.sample()
    assert sample.steal_pct == pytest.approx(25.0)
    assert sample.procs_running == 3
    assert sample.cpu_pressure_pct == 100.0
    assert "cpu steal" in " ".join(flag_reasons([], sample, Thresholds()))


def test_loop_lag_watch_records_a_gap() -> None:
    clock = iter([0, 10_000_000, 20_000_000, 420_000_000, 430_000_000])
    watch = LoopLagWatch(origin_ns=0, clock=lambda: next(clock))
    for _ in range(4):
        watch.observe()
    assert len(watch.stalls) == 1 and watch.stalls[0].duration_ms == 400
    assert watch.lag_ms(0) == pytest.approx(390)
    assert watch.stalls_touching(1, guard_ns=0) == []
    assert "stalled 400 ms" in flag_reasons(watch.stalls, None, Thresholds())[0]
