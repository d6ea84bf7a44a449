"""The dashboard as an operator sees it: written by smart-tui, served by a real nginx
on 127.0.0.1 with the site config install.sh renders, loaded in headless Chromium.

Checks the names and numbers on the page, the security headers, that the site is
read-only and lists no folder, and that hostile experiment names, variants and
reasons show up as text. Screenshots go to tests/artifacts/ (gitignored)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smart_tui.dashboard import write_dashboard
from smart_tui.storage import Store

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
HOSTILE = "<script>alert(1)</script>"
HOSTILE_REASON = '"><img src=x onerror=alert(2)> p50 <b>-40%</b>'


def tool(name: str) -> str:
    found = shutil.which(name, path=SBIN)
    if found is None:
        pytest.fail(f"{name} is not installed; run .ci/run (it installs it)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Site:
    url: str
    www: Path
    prefix: Path


def add_run(store: Store, run_id: str, experiment_id: str, variant: str, day: int,
            base_p50: float, reason: str, outcome: str = "KEEP") -> None:  # fmt: skip
    store.start_run(run_id, experiment_id, trigger="t", pid=1, host="h", settings={})
    base = {
        "requests": 1200,
        "p50_ms": base_p50,
        "p95_ms": base_p50 * 1.5,
        "p99_ms": base_p50 * 2,
        "error_pct": 0.0,
        "intended_rps": 100.0,
        "achieved_rps": 99.8,
    }
    store.add_window(run_id, "baseline", "baseline", base, [])
    store.add_window(run_id, variant, "variant", {**base, "p50_ms": 0.42}, [])
    store.add_decision(
        run_id, variant, outcome, policy="stats", reasons=[reason], details={},
        acted="kept" if outcome == "KEEP" else "reverted",
    )  # fmt: skip
    kept = variant if outcome == "KEEP" else None
    store.finish_run(run_id, status="done", outcome=outcome, kept_variant=kept)
    with store.db.conn:
        store.db.execute(
            "update runs set started_at = ? where id = ?",
            [f"2024-03-{day:02d}T03:00:00+00:00", run_id],
        )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """nginx serving PREFIX/opt/smart/www with install.sh's rendered site."""
    prefix = tmp_path / "root"
    www = prefix / "opt" / "smart" / "www"
    www.mkdir(parents=True)
    port = free_port()
    rendered = tmp_path / "rendered"
    subprocess.run(
        ["bash", str(REPO / "deploy/install.sh"), "--prefix", str(prefix),
         "--listen", f"127.0.0.1:{port}", "--render", str(rendered)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    nginx_dir = tmp_path / "nginx"
    (nginx_dir / "logs").mkdir(parents=True)
    # Workers run as `nobody` under a root master and pytest's folders are 0700.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = nginx_dir / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\npid logs/nginx.pid;\n"
        "error_log logs/error.log warn;\nevents { worker_connections 64; }\n"
        "http {\n    include /etc/nginx/mime.types;\n"
        "    default_type application/octet-stream;\n"
        "    access_log logs/access.log;\n"
        "    client_body_temp_path logs/body;\n    proxy_temp_path logs/proxy;\n"
        "    fastcgi_temp_path logs/fcgi;\n    uwsgi_temp_path logs/uwsgi;\n"
        "    scgi_temp_path logs/scgi;\n"
        f"    include {rendered / 'nginx-site.conf'};\n}}\n"
    )
    nginx = [tool("nginx"), "-p", str(nginx_dir), "-c", str(conf)]
    test = subprocess.run([*nginx, "-t"], capture_output=True, text=True, timeout=30)
    assert test.returncode == 0, test.stderr
    process = subprocess.Popen(
        [*nginx, "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                assert process.poll() is None, "nginx exited at start"
                time.sleep(0.05)
        yield Site(url=f"http://127.0.0.1:{port}/", www=www, prefix=prefix)
    finally:
        process.terminate()
        process.wait(timeout=10)


def chromium(url: str, screenshot: Path, profile: Path) -> str:
    """The DOM after load, and a screenshot of the page."""
    flags = [
        tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        "--window-size=1100,1600", f"--user-data-dir={profile}",
    ]  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    shot = subprocess.run(
        [*flags, f"--screenshot={screenshot}", url],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 5000, "the screenshot is empty"
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=90
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_dashboard_in_a_browser(site: Site, tmp_path: Path) -> None:
    store = Store(tmp_path / "smart.db")
    for day, p50 in enumerate([12.0, 12.5, 11.8, 12.2, 12.1, 19.5], start=1):
        add_run(store, f"r{day}", "002_proxy_cache", "cache_on", day, p50,
                "p50 -96% [-97%, -95%] at 95%: clears 10%")  # fmt: skip
    add_run(store, "w1", "001_nginx_workers", "auto", 7, 3.25,
            "no clear difference", outcome="REVERT")  # fmt: skip
    write_dashboard(store, site.www)

    status, headers, body = fetch(site.url)
    dom = chromium(site.url, ARTIFACTS / "dashboard.png", tmp_path / "profile")

    assert status == 200 and b"001_nginx_workers" in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp  # so scripts fall back to 'none'
    assert headers["X-Content-Type-Options"] == "nosniff"
    # The page as Chromium built it: latest run, history, trends with the flag.
    assert '<strong class="experiment">001_nginx_workers</strong>' in dom
    assert '<h3 class="trend-experiment">002_proxy_cache' in dom
    assert "3.25" in dom and "12.10" in dom and "19.50" in dom and "0.42" in dom
    assert "100 / 100 req/s" in dom
    assert "worse: baseline p50 19.50 ms is worse than each of the last 5" in dom
    assert dom.count("<svg") == 4 and '<path class="p50" d="M4 ' in dom
    assert "<script" not in dom


def test_site_is_read_only_and_lists_nothing(site: Site) -> None:
    (site.www / "index.html").write_text("<!doctype html><p>ok</p>")
    (site.www / "sub").mkdir()
    (site.www / "sub" / "file.txt").write_text("x")
    (site.www / ".index.html.tmp1234").write_text("half written")
    (site.www / "link.html").symlink_to(site.prefix / "opt" / "smart" / "www" / "x")

    assert fetch(site.url)[0] == 200
    assert fetch(site.url, "HEAD")[0] == 200
    assert fetch(site.url, "POST")[0] == 403
    assert fetch(site.url, "PUT")[0] == 403
    assert fetch(site.url + "sub/")[0] == 403  # no listing
    assert fetch(site.url + ".index.html.tmp1234")[0] == 403
    status, headers, _ = fetch(site.url + "missing")
    assert status == 404 and "Content-Security-Policy" in headers  # `always`
    assert "nginx/" not in headers.get("Server", "")


def test_hostile_names_show_as_text_in_a_browser(site: Site, tmp_path: Path) -> None:
    store = Store(tmp_path / "smart.db")
    add_run(store, "h1", HOSTILE, f"v{HOSTILE}", 1, 5.0, HOSTILE_REASON)
    write_dashboard(store, site.www)

    dom = chromium(site.url, ARTIFACTS / "dashboard-hostile.png", tmp_path / "p")

    assert "<script" not in dom and "<img" not in dom and "<b>" not in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "v&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "&lt;img src=x onerror=alert(2)&gt; p50 &lt;b&gt;-40%&lt;/b&gt;" in dom
