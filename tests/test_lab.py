"""The lab against the real nginx and backend: lifecycle, what it serves, live backend
changes, deterministic config, and the shipped experiments' apply/revert scripts."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from smart_tui.errors import LabError
from smart_tui.lab import Lab, LabInfo
from smart_tui.lab import nginx as lab_nginx

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO / "experiments"
LabFactory = Callable[[Path | None], Lab]


def get(
    url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes, float]:
    """One GET without any proxy: status, headers, body, seconds taken."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1"
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    started = time.monotonic()
    try:
        connection.request("GET", parts.path or "/", headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return response.status, dict(response.headers), body, time.monotonic() - started
    finally:
        connection.close()


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll ``check``: a reload swaps workers asynchronously."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def run_script(
    command: str, folder: Path, info: LabInfo
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **info.script_env(),
        "SMART_TARGET_URL": info.url + "/",
        "SMART_RUN_DIR": str(folder),
        "SMART_VARIANT": "test",
    }
    return subprocess.run(
        ["bash", "-c", command],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def nginx_t(info: LabInfo) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*info.nginx_cmd, "-t"], capture_output=True, text=True, check=False
    )


def test_start_status_stop(lab_factory: LabFactory) -> None:
    lab = lab_factory(None)
    assert lab.status() is None

    info = lab.start()
    assert info.running
    assert info.url == f"http://127.0.0.1:{info.port}"
    assert info.backend_url.startswith("http://127.0.0.1:")
    assert alive(info.nginx_pid) and alive(info.backend_pid)
    assert info.nginx_conf == info.prefix / "conf" / "nginx.conf"
    assert info.script_env()["SMART_LAB_URL"] == info.url
    assert "running" in lab.format_status(info)
    state = json.loads((info.prefix / "state.json").read_text())
    assert state["port"] == info.port

    lab.stop()
    stopped = lab.status()
    assert stopped is not None and not stopped.running
    assert not alive(info.nginx_pid) and not alive(info.backend_pid)
    lab.stop()  # stopping a stopped lab is fine


def test_start_is_idempotent_and_keeps_a_kept_config(lab_factory: LabFactory) -> None:
    lab = lab_factory(None)
    info = lab.start()
    assert lab.start() == info

    # A kept variant lives in nginx.conf and must survive a restart.
    applied = run_script("./apply.sh auto", EXPERIMENTS / "001_nginx_workers", info)
    assert applied.returncode == 0, applied.stderr
    kept = info.nginx_conf.read_bytes()
    lab.stop()
    restarted = lab.start()
    assert restarted.running and restarted.port == info.port
    assert info.nginx_conf.read_bytes() == kept

    baseline = lab.start(reset=True)
    assert baseline.running
    assert b"worker_processes 1;" in info.nginx_conf.read_bytes()


def test_config_bytes_are_deterministic(lab_factory: LabFactory) -> None:
    lab = lab_factory(None)
    first = lab.start()
    written = first.nginx_conf.read_bytes()
    lab.stop()

    again = lab.start(port=first.port, reset=True)
    assert again.nginx_conf.read_bytes() == written
    assert b"listen 127.0.0.1:%d;" % first.port in written
    assert nginx_t(again).returncode == 0


def test_serves_static_app_and_big(lab: LabInfo) -> None:
    status, _, body, _ = get(lab.url + "/")
    assert (status, len(body)) == (200, 1024)
    status, _, body, _ = get(lab.url + "/static/")
    assert (status, len(body)) == (200, 1024)

    Lab(lab.prefix.parent).set_backend(latency_ms=60, jitter_ms=0)
    status, _, body, elapsed_s = get(lab.url + "/app/x")
    assert status == 200 and json.loads(body)["item"] == "/app/x"
    # uvloop's timers round to the millisecond, so allow a hair under 60 ms.
    assert elapsed_s >= 0.058

    status, headers, body, _ = get(lab.url + "/big/", {"Accept-Encoding": "gzip"})
    assert status == 200 and "Content-Encoding" not in headers
    assert 45_000 <= len(body) <= 49_152
    json.loads(body)


def test_backend_errors_and_stall_reach_nginx(lab: LabInfo) -> None:
    lab_api = Lab(lab.prefix.parent)
    state = lab_api.set_backend(error_pct=100, latency_ms=0, jitter_ms=0)
    assert state["error_pct"] == 100
    assert get(lab.url + "/app/x")[0] >= 500

    lab_api.set_backend(error_pct=0, stall_s=0.6)
    status, _, _, elapsed_s = get(lab.url + "/app/x")
    assert status == 200 and elapsed_s >= 0.5
    # Once: the next response is quick again.
    assert get(lab.url + "/app/x")[3] < 0.3

    with pytest.raises(LabError, match="error_pct must be <= 100"):
        lab_api.set_backend(error_pct=150)


def test_access_log_has_the_documented_fields(lab: LabInfo) -> None:
    get(lab.url + "/app/logged", {"User-Agent": "lab-test agent"})

    def logged() -> list[str]:
        lines = lab.access_log.read_text().splitlines()
        return [line for line in lines if "/app/logged" in line]

    # The log is buffered and flushed every second.
    assert eventually(lambda: bool(logged()), timeout_s=4)
    fields = logged()[0].split("\t")
    assert len(fields) == 7
    assert fields[1] == "200"
    assert float(fields[2]) >= 0 and float(fields[3]) >= 0
    assert fields[4] == "GET /app/logged"
    assert fields[6] == "lab-test agent"


def _worker_count(info: LabInfo) -> int:
    assert info.nginx_pid is not None
    count = 0
    for child in psutil.Process(info.nginx_pid).children():
        # An old worker exiting after the reload may be a zombie for a moment.
        with contextlib.suppress(psutil.Error):
            count += "worker process" in " ".join(child.cmdline())
    return count


def _cache_status(info: LabInfo) -> str | None:
    get(info.url + "/app/cached")
    return get(info.url + "/app/cached")[1].get("X-Cache-Status")


def _content_encoding(info: LabInfo) -> str | None:
    return get(info.url + "/big/", {"Accept-Encoding": "gzip"})[1].get(
        "Content-Encoding"
    )


@pytest.mark.parametrize(
    ("experiment", "observe", "baseline", "variant"),
    [
        ("001_nginx_workers", _worker_count, 1, psutil.cpu_count()),
        ("002_proxy_cache", _cache_status, None, "HIT"),
        ("003_gzip_max", _content_encoding, None, "gzip"),
    ],
)
def test_experiment_apply_is_live_and_revert_restores_bytes(
    lab: LabInfo,
    experiment: str,
    observe: Callable[[LabInfo], object],
    baseline: object,
    variant: object,
) -> None:
    folder = EXPERIMENTS / experiment
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["id"] == experiment
    before = lab.nginx_conf.read_bytes()
    assert observe(lab) == baseline

    applied = run_script(meta["variants"][1]["apply"], folder, lab)
    assert applied.returncode == 0, applied.stderr
    assert lab.nginx_conf.read_bytes() != before
    assert eventually(lambda: observe(lab) == variant)

    reverted = run_script(meta["revert"], folder, lab)
    assert reverted.returncode == 0, reverted.stderr
    assert lab.nginx_conf.read_bytes() == before
    assert not list(lab.nginx_conf.parent.glob("*.smart-bak*"))
    assert nginx_t(lab).returncode == 0
    assert eventually(lambda: observe(lab) == baseline)


def test_apply_that_fails_nginx_t_restores_the_file(
    lab: LabInfo, tmp_path: Path
) -> None:
    copy = tmp_path / "experiments"
    shutil.copytree(EXPERIMENTS, copy)
    bad = copy / "003_gzip_max" / "apply.sh"
    # nginx accepts gzip_comp_level 1-9 only, so this edit fails `nginx -t`.
    bad.write_text(
        bad.read_text().replace("gzip_comp_level $level", "gzip_comp_level 42")
    )
    before = lab.nginx_conf.read_bytes()

    applied = run_script("./apply.sh 9", copy / "003_gzip_max", lab)

    assert applied.returncode != 0
    assert "nginx -t rejected the change" in applied.stderr
    assert "between 1 and 9" in applied.stderr
    assert lab.nginx_conf.read_bytes() == before
    assert not list(lab.nginx_conf.parent.glob("*.smart-bak*"))
    assert get(lab.url + "/")[0] == 200


def test_apply_without_marker_fails_clearly(lab: LabInfo) -> None:
    text = lab.nginx_conf.read_text().replace("# smart: proxy_cache", "")
    lab.nginx_conf.write_text(text)

    applied = run_script("./apply.sh on", EXPERIMENTS / "002_proxy_cache", lab)

    assert applied.returncode != 0
    assert "expected one line ending in '# smart: proxy_cache'" in applied.stderr
    assert lab.nginx_conf.read_text() == text


def test_reverting_one_kept_change_keeps_the_others(lab: LabInfo) -> None:
    """Two kept variants on one config: the recheck of the first puts back its own
    line only, so the second stays live."""
    before = lab.nginx_conf.read_text()
    workers = run_script("./apply.sh auto", EXPERIMENTS / "001_nginx_workers", lab)
    gzip = run_script("./apply.sh 9", EXPERIMENTS / "003_gzip_max", lab)
    both = lab.nginx_conf.read_text()

    reverted = run_script("./revert.sh", EXPERIMENTS / "001_nginx_workers", lab)
    after = lab.nginx_conf.read_text()

    assert workers.returncode == 0 and gzip.returncode == 0, gzip.stderr
    assert "worker_processes auto;" in both and "gzip_comp_level 9" in both
    assert reverted.returncode == 0, reverted.stderr
    assert after == both.replace(
        "worker_processes auto;  # smart: worker_processes",
        "worker_processes 1;  # smart: worker_processes",
    )
    assert after != before  # gzip 9 is still there
    assert nginx_t(lab).returncode == 0
    assert sorted(p.name for p in lab.nginx_conf.parent.glob("*.smart-*")) == [
        "nginx.conf.smart-bak.003_gzip_max",
        "nginx.conf.smart-set.003_gzip_max",
    ]


def test_revert_leaves_a_marked_line_someone_changed_since(lab: LabInfo) -> None:
    """After a keep the operator sets the line by hand: the recheck's revert must
    not put the backup's old value over it."""
    folder = EXPERIMENTS / "001_nginx_workers"
    kept = run_script("./apply.sh auto", folder, lab)
    by_hand = lab.nginx_conf.read_text().replace(
        "worker_processes auto;", "worker_processes 2;"
    )
    lab.nginx_conf.write_text(by_hand)

    reverted = run_script("./revert.sh", folder, lab)

    assert kept.returncode == 0, kept.stderr
    assert reverted.returncode != 0
    assert "line of" in reverted.stderr and "may have changed since" in reverted.stderr
    assert lab.nginx_conf.read_text() == by_hand


def test_a_backup_without_its_record_is_not_trusted(lab: LabInfo) -> None:
    """A keep from a version that wrote no record: whether the line was edited
    since is unknown, so the revert leaves it and says what to check."""
    folder = EXPERIMENTS / "001_nginx_workers"
    kept = run_script("./apply.sh auto", folder, lab)
    lab.nginx_conf.with_name("nginx.conf.smart-set.001_nginx_workers").unlink()
    live = lab.nginx_conf.read_bytes()

    reverted = run_script("./revert.sh", folder, lab)

    assert kept.returncode == 0, kept.stderr
    assert reverted.returncode != 0
    assert "check the line, then delete" in reverted.stderr
    assert lab.nginx_conf.read_bytes() == live


def test_applying_a_kept_change_again_keeps_the_first_backup(lab: LabInfo) -> None:
    before = lab.nginx_conf.read_bytes()
    folder = EXPERIMENTS / "001_nginx_workers"
    first = run_script("./apply.sh auto", folder, lab)
    again = run_script("./apply.sh auto", folder, lab)
    reverted = run_script("./revert.sh", folder, lab)

    assert first.returncode == 0 and again.returncode == 0, again.stderr
    assert reverted.returncode == 0, reverted.stderr
    assert lab.nginx_conf.read_bytes() == before  # worker_processes 1 again
    assert not list(lab.nginx_conf.parent.glob("*.smart-*"))


def test_revert_without_apply_changes_nothing(lab: LabInfo) -> None:
    before = lab.nginx_conf.read_bytes()
    reverted = run_script("./revert.sh", EXPERIMENTS / "002_proxy_cache", lab)
    assert reverted.returncode == 0
    assert "nothing to revert" in reverted.stderr
    assert lab.nginx_conf.read_bytes() == before


def test_missing_nginx_is_one_actionable_line(
    lab_factory: LabFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(lab_nginx, "SBIN_DIRS", ())
    if os.geteuid() == 0:
        expected = "nginx not found on PATH; install it with: apt-get install -y nginx"
    else:
        expected = "nginx not found on PATH; ask an administrator to install nginx"

    with pytest.raises(LabError) as raised:
        lab_factory(None).start()
    assert str(raised.value) == expected


def test_broken_config_names_the_file_and_error(lab_factory: LabFactory) -> None:
    lab = lab_factory(None)
    info = lab.start()
    lab.stop()
    info.nginx_conf.write_text(
        info.nginx_conf.read_text().replace("sendfile on;", "sendfile bogus;")
    )

    with pytest.raises(LabError) as raised:
        lab.start()
    message = str(raised.value)
    assert message.startswith(f"nginx -t failed for {info.nginx_conf}: ")
    assert "sendfile" in message and "\n" not in message
    stopped = lab.status()
    assert stopped is not None and not stopped.running


def test_refuses_to_listen_beyond_loopback(lab_factory: LabFactory) -> None:
    lab = lab_factory(None)
    info = lab.start()
    lab.stop()
    text = info.nginx_conf.read_text()
    info.nginx_conf.write_text(text.replace("listen 127.0.0.1:", "listen 0.0.0.0:"))

    with pytest.raises(LabError, match=re.escape("listens on 127.0.0.1:<port> only")):
        lab.start()


def test_set_backend_needs_a_started_lab(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="never started"):
        Lab(tmp_path / "var").set_backend(latency_ms=5)
