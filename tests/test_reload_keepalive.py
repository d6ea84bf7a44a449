"""A reload in the middle of a window, with keep-alive connections opened before it:
measurement goes on, and the proof of a reload waits until the old workers stop
accepting, so the window measured after it sees only the new config."""

from __future__ import annotations

import http.client
import subprocess
import threading
import time

from smart_tui.lab import LabInfo
from smart_tui.nginx_live import NginxWatch
from smart_tui.probe import ProbeConfig, ProbeResult, run_probe


def get(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
    conn.request("GET", "/static/index.html")
    response = conn.getresponse()
    response.read()
    return response


def test_reload_mid_window_with_old_keepalive_connections(lab: LabInfo) -> None:
    watch = NginxWatch(lab.prefix / "logs" / "nginx.pid", lab.error_log)
    old_conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=5)
    assert get(old_conn).getheader("X-Generation") is None

    results: list[ProbeResult] = []
    config = ProbeConfig(
        url=f"{lab.url}/static/index.html", rate_rps=200, duration_s=4, connections=4
    )
    prober = threading.Thread(target=lambda: results.append(run_probe(config)))
    prober.start()
    time.sleep(1.5)

    before = watch.snapshot()
    conf = lab.nginx_conf.read_text()
    lab.nginx_conf.write_text(
        conf.replace(
            "location /static/ {",
            "location /static/ {\n            add_header X-Generation new always;",
            1,
        )
    )
    subprocess.run([*lab.nginx_cmd, "-s", "reload"], check=True)
    assert watch.wait_for_reload(before, timeout_s=10) is None
    prober.join(timeout=30)

    # The probe's keep-alive connections crossed the reload without failures.
    summary = results[0].summary()
    assert summary["conn_errors"] + summary["timeouts"] <= 4
    assert summary["status_5xx"] == 0 and summary["requests"] >= 700

    # Once the reload is proven, a fresh connection gets the new config ...
    fresh = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=5)
    assert get(fresh).getheader("X-Generation") == "new"
    # ... while a connection from before was closed by its old worker, never
    # served by it again with the old config.
    try:
        stale = get(old_conn).getheader("X-Generation")
    except (ConnectionError, http.client.HTTPException):
        stale = "closed"
    assert stale in ("closed", "new")
