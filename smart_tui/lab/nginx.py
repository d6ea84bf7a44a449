"""The lab: a private nginx on 127.0.0.1 in front of the tunable backend.

``Lab(var_dir)`` keeps everything under ``<var_dir>/lab/`` (the nginx ``-p`` prefix and
``state.json``), needs no root, starts idempotently, keeps a kept variant of the config
across restarts and stops reliably. Every failure raises a one-line ``LabError``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psutil

import smart_tui
from smart_tui.errors import LabError

log = logging.getLogger("smart_tui.lab")

HOST = "127.0.0.1"
# Debian and most distros put nginx in an sbin dir that a non-root PATH omits.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# /big/ size, tuned on a 2-core machine so gzip level 9 is clearly slower than
# sending the bytes (~3 ms against ~1 ms at p50) yet never saturates the single
# worker at the probe's usual 100-200 req/s: at 256 KiB each request cost ~14 ms of
# CPU, so the variant queued into seconds and the probe timed out instead of
# measuring.
BIG_FILE_BYTES = 48 * 1024
DEFAULT_BACKEND = {"latency_ms": 20.0, "jitter_ms": 2.0, "error_pct": 0.0}
BACKEND_SEED = 1

_START_TIMEOUT_S = 10.0
_HTTP_TIMEOUT_S = 2.0
_LISTEN_RE = re.compile(r"^\s*listen\s+([^;]+);", re.MULTILINE)


@dataclass(frozen=True)
class LabInfo:
    """Where the lab lives and whether it answers; what ``status`` returns."""

    url: str
    port: int
    backend_url: str
    prefix: Path
    nginx_conf: Path
    nginx_cmd: list[str]
    nginx_pid: int | None
    backend_pid: int | None
    running: bool

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    def script_env(self) -> dict[str, str]:
        """The variables experiment scripts get when they run against the lab."""
        return {
            "SMART_NGINX_CONF": str(self.nginx_conf),
            "SMART_NGINX": shlex.join(self.nginx_cmd),
            "SMART_LAB_URL": self.url,
        }


def format_status(info: LabInfo | None) -> str:
    """Human text for ``smart-tui lab status``."""
    if info is None:
        return "lab: never started (start it with: smart-tui lab start)"
    state = "running" if info.running else "stopped"
    return "\n".join(
        [
            f"lab: {state}",
            f"  nginx    {info.url}  pid {info.nginx_pid or '-'}",
            f"  backend  {info.backend_url}  pid {info.backend_pid or '-'}",
            f"  config   {info.nginx_conf}",
            f"  command  {shlex.join(info.nginx_cmd)}",
            f"  logs     {info.access_log}",
        ]
    )


class Lab:
    """One lab per ``var_dir``; cheap to construct, all work happens in methods."""

    format_status = staticmethod(format_status)

    def __init__(self, var_dir: Path) -> None:
        self.root = Path(var_dir).resolve() / "lab"
        self.state_path = self.root / "state.json"
        self.nginx_conf = self.root / "conf" / "nginx.conf"

    def start(self, port: int | None = None, *, reset: bool = False) -> LabInfo:
        """Start nginx and the backend; return the running lab's info.

        Already running: returns its info unchanged. The baseline config is written only
        when none exists or ``reset`` is true, so a kept variant survives a restart.
        """
        current = self.status()
        if current is not None and current.running and not reset:
            return current
        self.stop()

        nginx_bin = find_nginx()
        self._write_files(reset=reset, port=port)
        port = self._configured_port()
        _require_free(port, f"nginx port {port}")
        nginx_cmd = [nginx_bin, "-p", f"{self.root}/", "-c", str(self.nginx_conf)]

        backend_port = _free_port()
        while backend_port == port:
            backend_port = _free_port()
        (self.root / "conf" / "backend.conf").write_text(
            f"server {HOST}:{backend_port};\n"
        )
        backend_pid = self._start_backend(backend_port)
        self._save_state(port, backend_port, nginx_cmd, backend_pid)
        try:
            self._check_config(nginx_cmd)
            self._start_nginx(nginx_cmd, port)
        except BaseException:
            self.stop()
            raise

        info = self.status()
        assert info is not None  # state.json was just written
        return info

    def stop(self) -> None:
        """Stop nginx (QUIT, then TERM, then KILL) and the backend; fine when idle."""
        state = self._load_state()
        if state is None:
            return
        nginx_pid = self._nginx_pid()
        if nginx_pid is not None:
            _terminate(nginx_pid, first=signal.SIGQUIT, with_children=True)
            (self.root / "logs" / "nginx.pid").unlink(missing_ok=True)
        backend_pid = state.get("backend_pid")
        if isinstance(backend_pid, int) and _is_backend(backend_pid):
            _terminate(backend_pid, first=signal.SIGTERM, with_children=False)

    def status(self) -> LabInfo | None:
        """None when never started; ``running`` means both pids live and both answer."""
        state = self._load_state()
        if state is None:
            return None
        port = int(state["port"])
        backend_port = int(state["backend_port"])
        nginx_pid = self._nginx_pid()
        backend_pid = state.get("backend_pid")
        if not (isinstance(backend_pid, int) and _is_backend(backend_pid)):
            backend_pid = None
        running = (
            nginx_pid is not None
            and backend_pid is not None
            and _http_ok(port, "/")
            and _http_ok(backend_port, "/__lab/state")
        )
        return LabInfo(
            url=f"http://{HOST}:{port}",
            port=port,
            backend_url=f"http://{HOST}:{backend_port}",
            prefix=self.root,
            nginx_conf=self.nginx_conf,
            nginx_cmd=[str(part) for part in state["nginx_cmd"]],
            nginx_pid=nginx_pid,
            backend_pid=backend_pid,
            running=running,
        )

    def set_backend(
        self,
        *,
        latency_ms: float | None = None,
        jitter_ms: float | None = None,
        error_pct: float | None = None,
        stall_s: float | None = None,
    ) -> dict[str, Any]:
        """Change the running backend live; returns its state after the change.

        ``stall_s`` holds every response for that many seconds, once, from now.
        """
        state = self._load_state()
        if state is None:
            raise LabError(
                "the lab was never started; start it with: smart-tui lab start"
            )
        changes = {
            "latency_ms": latency_ms,
            "jitter_ms": jitter_ms,
            "error_pct": error_pct,
            "stall_s": stall_s,
        }
        query = urllib.parse.urlencode(
            {
                key: repr(float(value))
                for key, value in changes.items()
                if value is not None
            }
        )
        status, body = _http_get(int(state["backend_port"]), f"/__lab/set?{query}")
        if status is None:
            raise LabError(
                "the lab backend does not answer; restart it with: smart-tui lab start"
            )
        answer: dict[str, Any] = json.loads(body)
        if status != 200:
            raise LabError(f"lab backend refused the change: {answer.get('error')}")
        return answer

    # -- files --------------------------------------------------------------------

    def _write_files(self, *, reset: bool, port: int | None) -> None:
        for sub in ("conf", "logs", "html/static", "html/big", "cache", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        files = resources.files("smart_tui.lab") / "files"
        page = files.joinpath("index.html").read_bytes()
        (self.root / "html" / "index.html").write_bytes(page)
        (self.root / "html" / "static" / "index.html").write_bytes(page)
        (self.root / "html" / "big" / "data.json").write_bytes(big_json())

        if self.nginx_conf.exists() and not reset:
            kept_port = self._configured_port()
            if port is not None and port != kept_port:
                raise LabError(
                    f"{_shown(self.nginx_conf)} listens on port {kept_port}, not "
                    f"{port}; start without a port or reset the lab config"
                )
            return
        template = files.joinpath("nginx.conf.template").read_text()
        self.nginx_conf.write_text(
            render_config(template, port or _free_port(), root_user=os.geteuid() == 0)
        )

    def _configured_port(self) -> int:
        """The port in the config's listen line; refuses anything but 127.0.0.1."""
        text = self.nginx_conf.read_text()
        ports = []
        for address in _LISTEN_RE.findall(text):
            host, _, port_text = address.split()[0].rpartition(":")
            if host != HOST or not port_text.isdigit():
                raise LabError(
                    f"{_shown(self.nginx_conf)} has 'listen {address}'; the lab "
                    f"listens on {HOST}:<port> only, fix the line or reset the config"
                )
            ports.append(int(port_text))
        if len(set(ports)) != 1:
            raise LabError(
                f"{_shown(self.nginx_conf)} needs exactly one 'listen {HOST}:<port>;' "
                "line; fix it or reset the lab config"
            )
        return ports[0]

    # -- state --------------------------------------------------------------------

    def _save_state(
        self, port: int, backend_port: int, nginx_cmd: list[str], backend_pid: int
    ) -> None:
        state = {
            "port": port,
            "backend_port": backend_port,
            "nginx_cmd": nginx_cmd,
            "backend_pid": backend_pid,
        }
        partial = self.state_path.with_suffix(".json.part")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(self.state_path)

    def _load_state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise LabError(
                f"{_shown(self.state_path)} is not JSON ({exc}); stop any lab nginx "
                "and delete the file"
            ) from exc
        return state

    def _nginx_pid(self) -> int | None:
        """The master pid from the pid file, if that process is this lab's nginx."""
        try:
            pid = int((self.root / "logs" / "nginx.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        # A stale pid file may name a recycled pid; only trust a live nginx master
        # whose command line names this prefix.
        try:
            process = psutil.Process(pid)
            cmdline = " ".join(process.cmdline())
            alive = process.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return (
            pid if alive and "nginx" in cmdline and str(self.root) in cmdline else None
        )

    # -- processes ----------------------------------------------------------------

    def _start_backend(self, backend_port: int) -> int:
        env = dict(os.environ)
        # The child must import this very package even when it is not installed.
        package_parent = str(Path(smart_tui.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (package_parent, env.get("PYTHONPATH")) if part
        )
        command = [sys.executable, "-m", "smart_tui.lab.backend"]
        command += ["--port", str(backend_port), "--seed", str(BACKEND_SEED)]
        for key, value in DEFAULT_BACKEND.items():
            command += [f"--{key.replace('_', '-')}", repr(value)]
        log_path = self.root / "logs" / "backend.log"
        with log_path.open("ab") as log_file:
            # A new session detaches the backend so it outlives the CLI and its
            # terminal's Ctrl-C.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _http_ok(backend_port, "/__lab/state"):
                return process.pid
            time.sleep(0.05)
        _terminate(process.pid, first=signal.SIGTERM, with_children=False)
        raise LabError(
            f"lab backend did not start on {HOST}:{backend_port}: "
            f"{_last_line(log_path)}; see {_shown(log_path)}"
        )

    def _check_config(self, nginx_cmd: list[str]) -> None:
        result = subprocess.run(
            [*nginx_cmd, "-t", "-q"],
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise LabError(
                f"nginx -t failed for {_shown(self.nginx_conf)}: "
                f"{_first_error(result.stderr)}"
            )

    def _start_nginx(self, nginx_cmd: list[str], port: int) -> None:
        # The daemonised master may keep inherited descriptors open, so its output
        # goes to a file rather than a pipe that would never reach EOF.
        out_path = self.root / "logs" / "nginx-start.log"
        with out_path.open("w") as out:
            result = subprocess.run(
                nginx_cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=_START_TIMEOUT_S,
                check=False,
            )
        if result.returncode != 0:
            raise LabError(
                f"nginx failed to start: {_first_error(out_path.read_text())}; "
                f"see {_shown(self.root / 'logs' / 'error.log')}"
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._nginx_pid() is not None and _http_ok(port, "/"):
                return
            time.sleep(0.05)
        raise LabError(
            f"nginx started but {HOST}:{port} does not answer; see "
            f"{_shown(self.root / 'logs' / 'error.log')}"
        )


def find_nginx() -> str:
    """Absolute path of nginx, searching PATH and then the usual sbin dirs."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    found = shutil.which("nginx", path=search)
    if found is not None:
        return found
    if os.geteuid() == 0:
        fix = "install it with: apt-get install -y nginx"
    else:
        fix = "ask an administrator to install nginx"
    raise LabError(f"nginx not found on PATH; {fix}")


def render_config(template: str, port: int, *, root_user: bool) -> str:
    """The baseline nginx.conf; same inputs, same bytes."""
    # As root, nginx workers switch to "nobody", who cannot read a prefix inside a
    # 0700 home or checkout. Workers running as root keep the master's access; the
    # lab only listens on loopback, so nothing outside the machine reaches them.
    # Without root the directive would only earn a warning, so it is left out.
    user_line = "user root;\n" if root_user else ""
    return template.replace("@USER_LINE@", user_line).replace("@PORT@", str(port))


def big_json() -> bytes:
    """``BIG_FILE_BYTES`` of deterministic, very compressible JSON for /big/."""
    rng = random.Random(256)
    colours = ["red", "green", "blue", "amber", "violet", "teal"]
    records = []
    size = 2
    index = 0
    while size < BIG_FILE_BYTES - 200:
        record = json.dumps(
            {
                "id": index,
                "name": f"item-{index:05d}",
                "colour": rng.choice(colours),
                "price_cents": rng.randrange(100, 10000),
                "in_stock": rng.random() < 0.8,
                "tags": sorted(rng.sample(colours, 2)),
            },
            separators=(",", ":"),
        )
        records.append(record)
        size += len(record) + 2
        index += 1
    return ("[\n" + ",\n".join(records) + "\n]\n").encode()


def _is_backend(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return (
            process.status() != psutil.STATUS_ZOMBIE
            and "smart_tui.lab.backend" in " ".join(process.cmdline())
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _terminate(pid: int, *, first: signal.Signals, with_children: bool) -> None:
    """Send ``first``, then TERM, then KILL, waiting a few seconds after each."""
    try:
        process = psutil.Process(pid)
        # Workers outlive a KILLed nginx master, so they are collected up front.
        children = process.children(recursive=True) if with_children else []
    except psutil.NoSuchProcess:
        return
    for sig, wait_s in ((first, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)
        if _wait_gone(process, wait_s):
            break
        log.warning("pid %d ignored %s", pid, sig.name)
    else:
        raise LabError(f"could not stop pid {pid}; kill it by hand: kill -9 {pid}")
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
        _wait_gone(child, 3.0)


def _wait_gone(process: psutil.Process, timeout_s: float) -> bool:
    """True once the process has exited. A zombie counts as exited: the daemonised
    nginx master belongs to init, which may take a second or more to reap it."""
    deadline = time.monotonic() + timeout_s
    while True:
        # A backend started by this process is its child; reap it here.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(process.pid, os.WNOHANG)
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _http_get(port: int, path: str) -> tuple[int | None, bytes]:
    """GET on loopback without proxies; (None, b"") when nothing answers."""
    connection = http.client.HTTPConnection(HOST, port, timeout=_HTTP_TIMEOUT_S)
    try:
        connection.request("GET", path, headers={"User-Agent": "smart-tui-lab"})
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None, b""
    finally:
        connection.close()


def _http_ok(port: int, path: str) -> bool:
    return _http_get(port, path)[0] == 200


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _require_free(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise LabError(
                f"{what} on {HOST} is taken ({exc.strerror}); stop what uses it or "
                "reset the lab config to pick another port"
            ) from exc


def _first_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if "[emerg]" in line or "[alert]" in line or "[crit]" in line:
            return line.split("] ", 1)[-1]
    return lines[0] if lines else "no output"


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return "no output"
    return lines[-1].strip() if lines else "no output"


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
