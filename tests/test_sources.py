"""Measurement sources against the real lab nginx: measure scripts printing CSV
samples, a JSON aggregate or garbage; the access log seeing real traffic while
ignoring smart-tui's own requests; wrk's real report; and ``--run-once`` end to end
with a script source, falling back to the seed rule on aggregates."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from smart_tui.errors import ExitCode
from smart_tui.experiments import Experiment, load
from smart_tui.lab import Lab, LabInfo
from smart_tui.probe import USER_AGENT, ProbeConfig, SecondStats
from smart_tui.records import scored_samples
from smart_tui.sources import (
    Aggregates,
    SourceError,
    SourceResult,
    aggregate_decision,
)
from smart_tui.sources import measure_window as measure
from smart_tui.sources.window import aggregate_result

REPO = Path(__file__).resolve().parent.parent

JSON_SCRIPT = """\
#!/usr/bin/env bash
# Aggregates only: a faster p50 for the variant, no errors.
if [[ "${SMART_VARIANT:-baseline}" == baseline ]]; then p50=20; else p50=5; fi
printf '{"requests": 200, "p50_ms": %s, "p99_ms": 40, "status_5xx": 0}\\n' "$p50"
"""
GARBAGE_SCRIPT = """\
#!/usr/bin/env bash
# Good samples for the baseline; the variant's output breaks on line 3.
echo "$(date +%s),1.5,200"
echo "$(date +%s),1.7,200"
if [[ "${SMART_VARIANT:-baseline}" == baseline ]]; then echo "$(date +%s),2,200"
else echo garbage; fi
"""


def experiment(
    tmp_path: Path, source: str, *, script: str = "", **meta: object
) -> Experiment:
    folder = tmp_path / "experiments" / "050_source"
    folder.mkdir(parents=True, exist_ok=True)
    if script:
        (folder / "measure.sh").write_text(script)
        (folder / "measure.sh").chmod(0o755)
    (folder / "meta.json").write_text(
        json.dumps(
            {
                "id": "050_source",
                "variants": [
                    {"name": "baseline", "apply": "true"},
                    {"name": "on", "apply": "true"},
                ],
                "source": source,
                **meta,
            }
        )
    )
    return load(folder)


def window(
    exp: Experiment,
    url: str,
    *,
    duration_s: float = 2,
    warmup_s: float = 0,
    env: dict[str, str] | None = None,
    access_log: Path | None = None,
    seconds: list[SecondStats] | None = None,
) -> SourceResult:
    config = ProbeConfig(
        url=url, rate_rps=100, duration_s=duration_s, warmup_s=warmup_s
    )
    result = measure(
        exp,
        config,
        env={"SMART_TARGET_URL": url, **(env or {})},
        on_second=None if seconds is None else seconds.append,
        stop=threading.Event(),
        on_samples=None,
        access_log=access_log,
    )
    assert isinstance(result, SourceResult)
    return result


def test_seed_measure_script_csv_samples(tmp_path: Path, lab: LabInfo) -> None:
    exp = experiment(tmp_path, "script")
    shutil.copy(REPO / "experiments/001_nginx_workers/measure.sh", exp.path)
    Lab(tmp_path / "var").set_backend(latency_ms=30, jitter_ms=0)
    seconds: list[SecondStats] = []
    result = window(
        exp, lab.url + "/app/", env={"SMART_MEASURE_COUNT": "20"}, seconds=seconds
    )

    summary = result.summary()
    assert summary["source"] == "script" and summary["requests"] == 20
    assert summary["status_2xx"] == 20 and summary["status_5xx"] == 0
    assert 30 <= summary["p50_ms"] < 200
    assert result.aggregates is None and result.latencies_ms.size == 20
    # Per-second rows with HDR histograms, as the probe's.
    assert seconds == result.per_second and all(s.hdr for s in seconds if s.intended)
    assert scored_samples(result).latencies_ms.size == 20


def test_script_json_aggregates_fall_back_to_the_seed_rule(
    tmp_path: Path, lab: LabInfo
) -> None:
    exp = experiment(tmp_path, "script", script=JSON_SCRIPT)
    base = window(exp, lab.url, env={"SMART_VARIANT": "baseline"})
    cand = window(exp, lab.url, env={"SMART_VARIANT": "on"})
    assert base.aggregates is not None and base.per_second == []
    assert base.summary()["p50_ms"] == 20 and base.summary()["requests"] == 200
    assert cand.aggregates is not None

    decision = aggregate_decision(
        scored_samples(base),
        scored_samples(cand),
        [base.aggregates],
        [cand.aggregates],
        source="script",
        policy={"improve_pct": 10, "max_err_delta_pct": 2},
    )
    assert decision is not None
    assert decision.decision == "KEEP" and decision.policy == "seed"
    assert any("no per-request samples" in reason for reason in decision.reasons)


def test_script_garbage_is_one_clear_line(tmp_path: Path, lab: LabInfo) -> None:
    exp = experiment(tmp_path, "script", script=GARBAGE_SCRIPT)
    with pytest.raises(SourceError) as caught:
        window(exp, lab.url, env={"SMART_VARIANT": "on"})
    assert caught.value.message == (
        "050_source: `./measure.sh` printed 'garbage' on line 3; expected "
        "timestamp,latency_ms,status or one JSON object"
    )
    assert caught.value.exit_code == ExitCode.BAD_EXPERIMENT


def send(url: str, count: int, agent: str, pause_s: float) -> None:
    """A bounded loop of GETs to the lab on 127.0.0.1."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1"
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        for _ in range(count):
            conn.request("GET", parts.path, headers={"User-Agent": agent})
            conn.getresponse().read()
            time.sleep(pause_s)
    finally:
        conn.close()


def test_access_log_sees_real_traffic_not_the_probe(
    tmp_path: Path, lab: LabInfo
) -> None:
    exp = experiment(tmp_path, "access_log")
    Lab(tmp_path / "var").set_backend(latency_ms=40, jitter_ms=0)
    url = lab.url + "/app/"

    def traffic() -> None:
        # Inside the window (which starts within 1 s): 30 real, 20 of our own.
        time.sleep(1.2)
        own = threading.Thread(target=send, args=(url, 20, USER_AGENT, 0.05))
        own.start()
        send(url, 30, "Mozilla/5.0 (test user)", 0.03)
        own.join()

    sender = threading.Thread(target=traffic)
    sender.start()
    result = window(exp, url, duration_s=4, access_log=lab.access_log)
    sender.join()

    summary = result.summary()
    assert summary["requests"] == 30 and summary["status_2xx"] == 30
    assert summary["own_requests_ignored"] == 20
    assert 40 <= summary["p50_ms"] < 200
    assert summary["upstream_requests"] == 30 and summary["upstream_p50_ms"] >= 40
    assert len(result.per_second) == 4 and summary["malformed_lines"] == 0


def test_access_log_in_another_format_names_the_fix(
    tmp_path: Path, lab: LabInfo
) -> None:
    log = tmp_path / "combined.log"
    log.write_text("")
    exp = experiment(tmp_path, "access_log", access_log=str(log))

    def write() -> None:
        time.sleep(1.2)
        with log.open("a") as handle:
            handle.write(
                '127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1"\n'
            )

    writer = threading.Thread(target=write)
    writer.start()
    with pytest.raises(SourceError, match="not in the expected format; give nginx"):
        window(exp, lab.url, duration_s=2)
    writer.join()


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
def test_wrk_report_is_parsed(tmp_path: Path, lab: LabInfo) -> None:
    exp = experiment(tmp_path, "wrk")
    Lab(tmp_path / "var").set_backend(latency_ms=5, jitter_ms=0, error_pct=30)
    result = window(exp, lab.url + "/app/", duration_s=2)

    figures = result.aggregates
    assert figures is not None and result.source in ("wrk", "wrk2")
    assert figures.requests > 100 and figures.conn_errors == 0
    assert 5 <= figures.p50_ms <= (figures.p99_ms or 0) <= (figures.max_ms or 0)
    # The backend fails about 30% of requests with a 5xx; wrk's Lua hook counts them.
    assert 0.15 < figures.status_5xx / figures.requests < 0.45
    assert result.summary()["achieved_rps"] > 50


def run_once(tmp_path: Path, lab: LabInfo, script: str) -> tuple[int, str, Path]:
    """``--run-once`` of experiment 060_script (copy of 001 with a script source)."""
    base = tmp_path
    shutil.copytree(REPO / "experiments", base / "experiments")
    folder = base / "experiments" / "060_script"
    shutil.copytree(base / "experiments" / "001_nginx_workers", folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(id="060_script", source="script")
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "measure.sh").write_text(script)
    (base / "smart.conf").write_text("# test workspace; var/ holds the lab\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMART_")}
    env.pop("COACH_URL", None)
    env["SMART_CONFIG"] = str(base / "smart.conf")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "smart_tui", "--run-once"),
            *("--experiment", "060_script"),
            *("--baseline-seconds", "3", "--experiment-seconds", "3"),
            *("--settle-seconds", "0", "--cooldown-seconds", "0"),
        ],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stderr, base


def test_run_once_with_aggregates_decides_by_the_seed_rule(
    tmp_path: Path, lab: LabInfo
) -> None:
    before = lab.nginx_conf.read_bytes()
    code, stderr, base = run_once(tmp_path, lab, JSON_SCRIPT)
    assert code == ExitCode.OK, stderr

    with sqlite3.connect(base / "var" / "smart.db") as conn:
        policy, reasons = conn.execute(
            "select policy, reasons from decisions"
        ).fetchone()
    assert policy == "seed" and "no per-request samples" in reasons
    # A KEEP leaves worker_processes auto live.
    assert b"worker_processes auto;" in lab.nginx_conf.read_bytes() != before


def test_run_once_reverts_when_the_script_prints_garbage(
    tmp_path: Path, lab: LabInfo
) -> None:
    before = lab.nginx_conf.read_bytes()
    code, stderr, _ = run_once(tmp_path, lab, GARBAGE_SCRIPT)

    assert code == ExitCode.BAD_EXPERIMENT
    assert "`./measure.sh` printed 'garbage' on line 3" in stderr
    assert "Traceback" not in stderr
    assert lab.nginx_conf.read_bytes() == before


def test_aggregate_window_has_no_samples_but_a_summary() -> None:
    config = ProbeConfig(url="http://127.0.0.1:1/", rate_rps=0, duration_s=1)
    result = aggregate_result(config, "wrk", Aggregates(requests=10, p50_ms=3))
    assert result.latencies_ms.size == 0
    assert np.isnan(result.summary()["p99_ms"])
    assert result.to_storage()["summary"]["requests"] == 10
