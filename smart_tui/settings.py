"""The ``Settings`` model: every knob of smart-tui with its default, bounds and docs.

File keys are the attribute names in upper case (``KEYS``). A bare ``Settings(...)``
is keyword arguments over defaults; ``config.py`` reads the file and environment
into it (through ``layered``), explains errors, describes and edits the file."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

# Schemes COACH_URL may use: the coach API itself, or a local model server.
COACH_SCHEMES = ("http", "https", "ollama", "openai+http", "openai+https")
SEVERITY_EXPECT = "info, notice, warning or critical"


@dataclass(frozen=True)
class Origin:
    """Where one value came from; the two renderings suit a table and an error."""

    kind: Literal["default", "file", "env", "flag"]
    name: str = ""  # file path as given, env variable, or KEY for a flag
    line: int = 0

    def label(self) -> str:
        if self.kind == "file":
            return f"{Path(self.name).name}:{self.line}"
        return f"env {self.name}" if self.kind == "env" else self.kind

    def where(self) -> str:
        if self.kind == "file":
            return f"{self.name}:{self.line}"
        if self.kind == "flag":
            return f"--set {self.name}"
        return f"env {self.name}" if self.kind == "env" else "default"


def _field(default: Any, doc: str, expect: str, example: str = "", **kw: Any) -> Any:
    """A field whose docs double as the fix in error messages."""
    extra: dict[str, Any] = {"expect": expect, "example": example}
    return Field(default, description=doc, json_schema_extra=extra, **kw)


def _seconds(default: float, doc: str, *, positive: bool) -> Any:
    if positive:
        return _field(default, doc, "seconds > 0", gt=0, allow_inf_nan=False)
    return _field(default, doc, "seconds >= 0", ge=0, allow_inf_nan=False)


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unbalanced [ in an IPv6 host
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_coach_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in COACH_SCHEMES and bool(parts.hostname)


# A systemd time span: numbers with optional units, e.g. "30min", "1h 30m", "0".
_TIME_SPAN = re.compile(r"(?:\d+(?:\.\d+)?\s*(?:us|ms|s|sec|m|min|h|hr|d|w)?\s*)+")


class Settings(BaseSettings):
    """Every knob of smart-tui; file keys are the attribute names in upper case."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    base_dir: Path = Field(
        default_factory=Path.cwd,
        description="Root for relative paths; default: the folder of the config "
        "file (a relative BASE_DIR in the file is relative to that folder).",
        json_schema_extra={"expect": "a folder path", "example": "/srv/smart"},
    )
    experiments_dir: Path = _field(
        Path("experiments"), "Folder of experiments (NNN_name/meta.json).", "a path"
    )
    var_dir: Path = _field(Path("var"), "Runtime state: runs, lab, locks.", "a path")
    db_path: Path = _field(Path("var/smart.db"), "SQLite results database.", "a path")
    www_dir: Path = _field(
        Path("www"), "Where the HTML dashboard is written.", "a path"
    )
    baseline_seconds: float = _seconds(
        300, "How long to measure before each change.", positive=True
    )
    experiment_seconds: float = _seconds(
        300, "How long to measure with the change applied.", positive=True
    )
    cooldown_seconds: float = _seconds(60, "Pause between experiments.", positive=False)
    settle_seconds: float = _seconds(
        5, "Wait after apply/revert before measuring.", positive=False
    )
    warmup_seconds: float = _seconds(
        1, "Probe traffic discarded at the start of each window.", positive=False
    )
    improve_pct: float = _field(
        10,
        "Minimum p99 latency improvement (percent) to keep a change.",
        "a percentage above 0 and below 100",
        gt=0,
        lt=100,
    )
    max_err_delta_pct: float = _field(
        2,
        "Largest allowed rise in error rate (percentage points).",
        "a percentage from 0 to 100",
        ge=0,
        le=100,
    )
    confidence: float = _field(
        0.95,
        "Statistical confidence needed for a decision (stats policy).",
        "a fraction from 0.5 to 0.999",
        ge=0.5,
        le=0.999,
    )
    decision_policy: Literal["stats", "seed"] = _field(
        "stats",
        "stats: confidence test; seed: the old bash script's rule.",
        "stats or seed",
    )
    switchback_blocks: int = _field(
        0,
        "0 or 1: one baseline window, then the variant; N >= 2: N alternating "
        "baseline/variant block pairs sharing the windows, so drift cancels.",
        "a whole number 0..50",
        ge=0,
        le=50,
    )
    target_url: str = _field(
        "",
        "URL the probe measures; empty = the lab's URL.",
        "empty or an http(s):// URL",
        "http://127.0.0.1:8080/",
    )
    probe_rate_rps: float = _field(
        100, "Requests per second the probe sends.", "a rate >= 0", ge=0
    )
    probe_connections: int = _field(
        16, "Connections the probe keeps open.", "a whole number 1..10000", ge=1
    )
    probe_timeout_ms: int = _field(
        2000,
        "Per-request timeout of the probe.",
        "milliseconds > 0",
        gt=0,
    )
    nginx_conf: str = _field(
        "",
        "nginx main config experiments edit; empty = the lab's config.",
        "empty or a file path",
        "/etc/nginx/nginx.conf",
    )
    nginx_cmd: str = _field(
        "",
        "Command that runs nginx, e.g. 'sudo -n nginx'; empty = the lab's nginx.",
        "empty or a command line",
        "'sudo -n nginx'",
    )
    root_helper_cmd: str = _field(
        "",
        "Command that runs smart-tui-root as root (experiments, restores, nginx -t "
        "and reloads on a server whose nginx config root owns); empty = this user "
        "does all of it.",
        "empty or a command line",
        "'sudo -n /opt/smart/venv/bin/smart-tui-root /opt/smart/smart.conf'",
    )
    nginx_pid_file: str = _field(
        "/run/nginx.pid",
        "nginx master's pid file, to prove a reload started new workers "
        "(ignored with the lab).",
        "a file path",
        "/run/nginx.pid",
    )
    nginx_error_log: str = _field(
        "/var/log/nginx/error.log",
        "nginx error log, scanned for [emerg] and [alert] after each reload "
        "(ignored with the lab).",
        "a file path",
        "/var/log/nginx/error.log",
    )
    reload_timeout_seconds: float = _seconds(
        10, "How long a reload may take to start new workers.", positive=True
    )
    script_timeout_seconds: float = _seconds(
        120, "Limit for each apply/revert/measure script.", positive=True
    )
    approval: Literal["auto", "manual"] = _field(
        "auto",
        "auto: keep winners at once; manual: wait for a human.",
        "auto or manual",
    )
    approval_timeout_seconds: int = _field(
        86400,
        "How long a manual approval may wait for an answer.",
        "whole seconds > 0",
        gt=0,
    )
    coach_url: str = _field(
        "",
        "Coach: an http(s):// API, ollama://HOST:PORT/MODEL or "
        "openai+http(s)://HOST:PORT/MODEL; empty = no coach.",
        "empty, an http(s)://, ollama:// or openai+http(s):// URL",
        "https://coach.example/",
    )
    coach_token: SecretStr = _field(
        SecretStr(""), "Token sent to the coach; never shown.", "a token"
    )
    coach_when: Literal["uncertain", "always", "never"] = _field(
        "uncertain",
        "When a finished run asks the coach: uncertain (INCONCLUSIVE or a close "
        "call), always or never.",
        "uncertain, always or never",
    )
    coach_mode: Literal["advise", "act"] = _field(
        "advise",
        "advise: advice is stored and shown; act: agreeing advice may turn an "
        "INCONCLUSIVE into a rerun or a longer window, never into a KEEP.",
        "advise or act",
    )
    coach_proxy: str = _field(
        "",
        "Proxy for coach requests; empty = direct (proxy env vars are ignored).",
        "empty or an http(s):// URL",
        "http://127.0.0.1:3128/",
    )
    coach_connect_timeout_seconds: float = _seconds(
        3, "Deadline to connect to the coach.", positive=True
    )
    coach_timeout_seconds: float = _seconds(
        20, "Total deadline of one coach exchange, retries included.", positive=True
    )
    coach_retries: int = _field(
        2, "Extra coach attempts after a failure.", "a whole number 0..5", ge=0, le=5
    )
    slack_webhook_url: SecretStr = _field(
        SecretStr(""),
        "Slack incoming webhook URL; empty = off; never shown.",
        "empty or an https:// URL",
        "https://hooks.slack.com/services/...",
    )
    slack_min_severity: Literal["info", "notice", "warning", "critical"] = _field(
        "notice", "Least severe event sent to Slack.", SEVERITY_EXPECT
    )
    discord_webhook_url: SecretStr = _field(
        SecretStr(""),
        "Discord webhook URL; empty = off; never shown.",
        "empty or an https:// URL",
        "https://discord.com/api/webhooks/...",
    )
    discord_min_severity: Literal["info", "notice", "warning", "critical"] = _field(
        "notice", "Least severe event sent to Discord.", SEVERITY_EXPECT
    )
    webhook_url: SecretStr = _field(
        SecretStr(""),
        "Generic JSON webhook URL; empty = off; never shown.",
        "empty or an https:// URL",
        "https://hooks.example/smart",
    )
    webhook_min_severity: Literal["info", "notice", "warning", "critical"] = _field(
        "notice", "Least severe event sent to WEBHOOK_URL.", SEVERITY_EXPECT
    )
    notify_timeout_seconds: float = _seconds(
        5, "Total deadline for sending one event to every target.", positive=True
    )
    dashboard_url: str = _field(
        "",
        "Public URL of the dashboard, linked from notifications; empty = none.",
        "empty or an http(s):// URL",
        "https://smart.example/",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _field(
        "INFO", "Log verbosity.", "DEBUG, INFO, WARNING or ERROR"
    )
    recheck_days: float = _field(
        30,
        "Re-test a kept change after this many days to catch drift; 0 = never.",
        "days >= 0",
        ge=0,
        allow_inf_nan=False,
    )
    timer_schedule: str = _field(
        "*-*-* 03:00:00",
        "When the systemd timer runs --run-once (OnCalendar=); install.sh reads it.",
        "a systemd calendar event",
        "'*-*-* 03:00:00'",
    )
    timer_random_delay: str = _field(
        "30min",
        "Random delay added to each timer start (RandomizedDelaySec=).",
        "a systemd time span such as 30min, 1h or 0",
        "30min",
    )
    metrics_path: str = _field(
        "",
        "node_exporter textfile written after each run; empty = off.",
        "empty or a file path ending in .prom",
        "/var/lib/prometheus/node-exporter/smart.prom",
    )

    _config_file: Path | None = PrivateAttr(default=None)
    _config_reason: str = PrivateAttr(default="defaults only")
    _origins: dict[str, Origin] = PrivateAttr(default_factory=dict)

    @field_validator("base_dir")
    @classmethod
    def _absolute_base(cls, value: Path) -> Path:
        return Path(os.path.abspath(value.expanduser()))

    @field_validator("experiments_dir", "var_dir", "db_path", "www_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("target_url", "coach_proxy", "dashboard_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not _is_http_url(value):
            raise ValueError("is not an http(s):// URL")
        return value

    @field_validator("coach_url")
    @classmethod
    def _coach_url(cls, value: str) -> str:
        if value and not _is_coach_url(value):
            raise ValueError("is not an http(s)://, ollama:// or openai+http(s):// URL")
        return value

    @field_validator("slack_webhook_url", "discord_webhook_url", "webhook_url")
    @classmethod
    def _secret_http_url(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and not _is_http_url(value.get_secret_value()):
            raise ValueError("is not an http(s):// URL")
        return value

    @field_validator("timer_schedule", "timer_random_delay")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # Rendered into a unit file: a newline would smuggle in another directive.
        if not value.strip() or any(char in value for char in "\n\r\0"):
            raise ValueError("must be one non-empty line")
        return value.strip()

    @field_validator("timer_random_delay")
    @classmethod
    def _time_span(cls, value: str) -> str:
        if not _TIME_SPAN.fullmatch(value):
            raise ValueError("is not a systemd time span")
        return value

    @field_validator("metrics_path")
    @classmethod
    def _prom_file(cls, value: str) -> str:
        # node_exporter's textfile collector reads only *.prom files.
        if value and not value.endswith(".prom"):
            raise ValueError("must end in .prom (node_exporter reads only those)")
        return value

    @field_validator("nginx_cmd", "root_helper_cmd")
    @classmethod
    def _splittable(cls, value: str) -> str:
        try:
            shlex.split(value)
        except ValueError:
            raise ValueError("has an unclosed quote") from None
        return value

    @field_validator(
        "decision_policy",
        "approval",
        "coach_when",
        "coach_mode",
        "slack_min_severity",
        "discord_min_severity",
        "webhook_min_severity",
        mode="before",
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only load_settings() layers env and file in; a bare Settings(...) is
        # keyword arguments over defaults, so tests elsewhere stay hermetic.
        return (init_settings, *(_LAYERS.get() or ()))

    @property
    def config_file(self) -> Path | None:
        """The config file that was read, or None when only defaults applied."""
        return self._config_file

    @property
    def config_reason(self) -> str:
        """How the config file was chosen, e.g. 'given by --config'."""
        return self._config_reason

    @property
    def sources(self) -> dict[str, str]:
        """KEY -> where its value came from: default, smart.conf:12, env X, flag."""
        return {key: self._origin(key).label() for key in KEYS}

    def _origin(self, key: str) -> Origin:
        return self._origins.get(key, Origin("default"))

    def resolve_path(self, path: Path) -> Path:
        """A path from the settings, made absolute against BASE_DIR."""
        return path if path.is_absolute() else self.base_dir / path

    @property
    def experiments_path(self) -> Path:
        return self.resolve_path(self.experiments_dir)

    @property
    def var_path(self) -> Path:
        return self.resolve_path(self.var_dir)

    @property
    def database_path(self) -> Path:
        return self.resolve_path(self.db_path)

    @property
    def www_path(self) -> Path:
        return self.resolve_path(self.www_dir)

    @property
    def metrics_file(self) -> Path | None:
        """METRICS_PATH resolved against BASE_DIR; None means no metrics file."""
        if not self.metrics_path:
            return None
        return self.resolve_path(Path(self.metrics_path).expanduser())

    @property
    def nginx_conf_path(self) -> Path | None:
        """NGINX_CONF resolved against BASE_DIR; None means the lab's config."""
        return self.resolve_path(Path(self.nginx_conf)) if self.nginx_conf else None


# KEY (as written in the file) -> attribute name.
KEYS: dict[str, str] = {name.upper(): name for name in Settings.model_fields}

_LAYERS: ContextVar[tuple[PydanticBaseSettingsSource, ...] | None] = ContextVar(
    "smart_tui_config_layers", default=None
)


@contextmanager
def layered(layers: tuple[PydanticBaseSettingsSource, ...]) -> Iterator[None]:
    """Within the block, ``Settings()`` reads ``layers`` (highest precedence first)
    under its keyword arguments; outside it, only keywords and defaults apply."""
    token = _LAYERS.set(layers)
    try:
        yield
    finally:
        _LAYERS.reset(token)
