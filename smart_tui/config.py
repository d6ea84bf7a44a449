"""Loading the ``Settings`` model (``settings.py``) from a bash-style ``smart.conf``,
read without running anything, and describing and editing that file.

Precedence is ``--set`` flag > environment (``SMART_<KEY>``, bare ``BASE_DIR``,
``COACH_URL``, ``COACH_TOKEN``) > the file > defaults. Every problem is one
``ConfigError`` line naming where it came from and how to fix it; secrets never
appear in messages or in ``describe()``."""

from __future__ import annotations

import difflib
import grp
import os
import pwd
import shlex
import stat
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from smart_tui.errors import ConfigError
from smart_tui.settings import KEYS, Origin, Settings, layered
from smart_tui.shellconf import (
    Assignment,
    assignment,
    lines_with_endings,
    rewrite,
    statements,
)

CONFIG_NAME = "smart.conf"
ENV_PREFIX = "SMART_"
# The seed read these without a prefix; keep accepting them so old setups work.
BARE_ENV_KEYS = frozenset({"BASE_DIR", "COACH_URL", "COACH_TOKEN"})
SECRET_KEYS = frozenset(
    {"COACH_TOKEN", "SLACK_WEBHOOK_URL", "DISCORD_WEBHOOK_URL", "WEBHOOK_URL"}
)
URL_KEYS = frozenset({"TARGET_URL", "COACH_URL", "COACH_PROXY", "DASHBOARD_URL"})
MASK = "****"
CHECK_HINT = "see `smart-tui check-config` for the known keys"
# Settings shown resolved against BASE_DIR by describe().
_PATH_FIELDS = frozenset(
    name for name, info in Settings.model_fields.items() if info.annotation is Path
)


class _LayerSource(PydanticBaseSettingsSource):
    """One precedence layer: attribute name -> raw value, plus each value's origin."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        values: dict[str, Any],
        origins: dict[str, Origin],
    ) -> None:
        super().__init__(settings_cls)
        self.values = values
        self.origins = origins

    def get_field_value(
        self, field: FieldInfo, field_name: str
    ) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


# --- the shell file ---------------------------------------------------------


def _suggest(key: str) -> str:
    upper = key.upper()
    if upper.startswith(ENV_PREFIX) and upper[len(ENV_PREFIX) :] in KEYS:
        return f"did you mean {upper[len(ENV_PREFIX) :]}? (SMART_ is for env vars)"
    close = difflib.get_close_matches(upper, list(KEYS), n=1)
    return f"did you mean {close[0]}?" if close else CHECK_HINT


def _unknown_key(where: str, key: str) -> ConfigError:
    return ConfigError(f"{where}: unknown key {key}; {_suggest(key)}")


def parse_config_text(text: str, where: str = CONFIG_NAME) -> list[Assignment]:
    """Every assignment in file order; ``where`` names the file in errors."""
    found = []
    for first, last, words in statements(text, where):
        if not words:
            continue  # blank line or comment
        item = assignment(first, last, words, where)
        if item.key not in KEYS:
            raise _unknown_key(f"{where}:{first}", item.key)
        found.append(item)
    return found


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}; check its permissions"
        ) from None


class ShellFileSource(_LayerSource):
    """The values of a bash-style config file, read without executing it."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, text: str):
        values: dict[str, Any] = {}
        origins: dict[str, Origin] = {}
        for item in parse_config_text(text, str(path)):
            name = KEYS[item.key]
            values[name] = item.value  # later lines overwrite: last wins, as in bash
            origins[item.key] = Origin("file", str(path), item.first)
        if "base_dir" in values:
            # Relative to the file rather than to wherever smart-tui was started.
            values["base_dir"] = path.parent / Path(values["base_dir"]).expanduser()
        super().__init__(settings_cls, values, origins)


# --- environment, flags, discovery ------------------------------------------


def _env_names(key: str) -> tuple[str, ...]:
    bare = (key,) if key in BARE_ENV_KEYS else ()
    return (ENV_PREFIX + key, *bare)


def _env_var(key: str, environ: Mapping[str, str]) -> str | None:
    """The variable that sets KEY; an empty BASE_DIR counts as unset, as in bash."""
    for var in _env_names(key):
        if var in environ and (environ[var] or key != "BASE_DIR"):
            return var
    return None


def _env_layer(environ: Mapping[str, str]) -> _LayerSource:
    """SMART_<KEY> (and a few bare names); other SMART_* are ignored: env is shared."""
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for key, name in KEYS.items():
        var = _env_var(key, environ)
        if var is None:
            continue
        values[name] = environ[var]
        origins[key] = Origin("env", var)
    return _LayerSource(Settings, values, origins)


def _flag_layer(overrides: Mapping[str, str]) -> _LayerSource:
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for raw_key, value in overrides.items():
        key = raw_key.strip().upper().replace("-", "_")
        if key not in KEYS:
            raise _unknown_key("--set", raw_key)
        values[KEYS[key]] = value
        origins[key] = Origin("flag", key)
    return _LayerSource(Settings, values, origins)


def _explicit_file(path: Path, given_by: str) -> Path:
    if not path.exists():
        raise ConfigError(
            f"config file {path} not found (given by {given_by}); create it or "
            f"point {given_by} at an existing file"
        )
    if path.is_dir():
        raise ConfigError(
            f"config file {path} is a folder (given by {given_by}); "
            f"point {given_by} at a file such as {path / CONFIG_NAME}"
        )
    return path


def find_config_file(
    config_path: Path | None, environ: Mapping[str, str]
) -> tuple[Path | None, str]:
    """The config file to read and how it was chosen; None means defaults only."""
    if config_path is not None:
        return _explicit_file(Path(config_path), "--config"), "given by --config"
    if environ.get("SMART_CONFIG"):
        path = Path(environ["SMART_CONFIG"])
        return _explicit_file(path, "SMART_CONFIG"), "given by SMART_CONFIG"
    for var in ("SMART_BASE_DIR", "BASE_DIR"):
        if environ.get(var):
            candidate = Path(environ[var]).expanduser() / CONFIG_NAME
            if candidate.is_file():
                return candidate, f"found in {var}"
            break  # SMART_BASE_DIR outranks BASE_DIR, as for the setting itself
    if Path(CONFIG_NAME).is_file():
        return Path(CONFIG_NAME), "found in the current folder"
    return None, "none found; defaults only"


# --- building and explaining ------------------------------------------------

_PROBLEMS = {
    "float_parsing": "is not a number",
    "int_parsing": "is not a whole number",
    "int_from_float": "is not a whole number",
    "finite_number": "is not a finite number",
    "greater_than": "is out of range",
    "greater_than_equal": "is out of range",
    "less_than": "is out of range",
    "less_than_equal": "is out of range",
    "literal_error": "is not one of the choices",
    "path_type": "is not a path",
}


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _example(name: str) -> str:
    info = Settings.model_fields[name]
    extra = info.json_schema_extra
    example = extra.get("example") if isinstance(extra, dict) else None
    if example:
        return str(example)
    default = info.default
    if isinstance(default, int | float):
        return _format_number(default)
    return shlex.quote(str(default))


def _expectation(name: str) -> str:
    extra = Settings.model_fields[name].json_schema_extra
    expect = extra.get("expect") if isinstance(extra, dict) else None
    return str(expect or "a valid value")


def _mask_url(value: str) -> str:
    """Hide credentials a URL may carry: userinfo, query and fragment."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return MASK
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else host
    query = MASK if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _shown_raw(key: str, value: Any) -> str:
    """A raw value as it may appear in an error message."""
    if key in SECRET_KEYS:
        return MASK
    text = value if isinstance(value, str) else str(value)
    return repr(_mask_url(text) if key in URL_KEYS else text)


def _problem(error: Mapping[str, Any]) -> str:
    if error["type"] == "value_error":
        return str(error.get("ctx", {}).get("error", "is not valid"))
    return _PROBLEMS.get(error["type"], "is not valid")


def _explain(exc: ValidationError, origins: Mapping[str, Origin]) -> str:
    """The first validation error as one line; never echoes a secret."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    key = name.upper()
    where = origins.get(key, Origin("default")).where()
    if name not in Settings.model_fields:  # only reachable by misuse of Settings
        return f"{where}: {key or 'settings'} is not valid; {CHECK_HINT}"
    shown = _shown_raw(key, error.get("input"))
    return (
        f"{where}: {key}={shown} {_problem(error)}; expected "
        f"{_expectation(name)}, e.g. {key}={_example(name)}"
    )


def _merge_origins(layers: tuple[_LayerSource, ...]) -> dict[str, Origin]:
    merged: dict[str, Origin] = {}
    for layer in layers:  # highest precedence first
        for key, origin in layer.origins.items():
            merged.setdefault(key, origin)
    return merged


def _build(layers: tuple[_LayerSource, ...]) -> Settings:
    origins = _merge_origins(layers)
    with layered(layers):
        try:
            settings = Settings()
        except ValidationError as exc:
            # from None: pydantic's own text would quote the rejected input.
            raise ConfigError(_explain(exc, origins)) from None
    settings._origins = origins
    return settings


def _file_layers(path: Path, text: str) -> tuple[_LayerSource, ...]:
    # The folder of the file is BASE_DIR's default, but still reported as default.
    folder = _LayerSource(Settings, {"base_dir": path.parent}, {})
    return ShellFileSource(Settings, path, text), folder


def load_settings(
    config_path: Path | None = None,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from flags, environment, the config file and defaults, in that order.

    ``overrides`` maps KEY (any case) to the raw string given on the command line;
    ``environ`` defaults to ``os.environ``. Raises ConfigError on any problem."""
    env = os.environ if environ is None else environ
    path, reason = find_config_file(config_path, env)
    layers: tuple[_LayerSource, ...] = (_flag_layer(overrides or {}), _env_layer(env))
    if path is not None:
        layers += _file_layers(path, _read_text(path))
    settings = _build(layers)
    settings._config_file = path
    settings._config_reason = reason
    return settings


def private_group(path: Path) -> bool:
    """Whether ``path``'s group is one user's own: named after a user whose primary
    group it is, with no other members (the group a system user gets)."""
    try:
        group = grp.getgrgid(path.stat().st_gid)
        user = pwd.getpwnam(group.gr_name)
    except (KeyError, OSError):
        return False
    return user.pw_gid == group.gr_gid and not set(group.gr_mem) - {user.pw_name}


def refuse_exposed_secrets(settings: Settings) -> None:
    """Raise ConfigError if the config file holds a secret yet group or others may
    read it. Called at startup, not by ``load_settings``: checking a draft (the
    app's editor) must not fail on the mode of the file it came from."""
    path = settings.config_file
    if path is None:
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return  # it was just read; a vanished file changes nothing about secrets
    if not mode & 0o044:
        return
    if not mode & 0o004 and private_group(path):
        return  # root:smart 0640 on a server: only the service user reads it
    held = sorted(
        item.key
        for item in parse_config_text(_read_text(path), str(path))
        if item.key in SECRET_KEYS and item.value
    )
    if held:
        raise ConfigError(
            f"{path} holds {', '.join(held)} but group or others may read it "
            f"(mode {mode:04o}); run `chmod 600 {shlex.quote(str(path))}` (or 640 "
            "with the service user's own group)"
        )


# --- showing ----------------------------------------------------------------


class SettingRow(NamedTuple):
    key: str
    value_shown: str
    source: str
    doc: str


def _shown_value(settings: Settings, name: str) -> str:
    value = getattr(settings, name)
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else "(empty)"
    if name in _PATH_FIELDS:
        return str(settings.resolve_path(value))
    if name == "nginx_conf" and settings.nginx_conf_path is not None:
        return str(settings.nginx_conf_path)
    if isinstance(value, float):
        return _format_number(value)
    text = str(value)
    if not text:
        return "(empty)"
    return _mask_url(text) if name.upper() in URL_KEYS else text


def describe(settings: Settings) -> list[SettingRow]:
    """One row per key: effective value (paths resolved, secrets masked) and source."""
    sources = settings.sources
    return [
        SettingRow(key, _shown_value(settings, name), sources[key], _doc(name))
        for key, name in KEYS.items()
    ]


def _doc(name: str) -> str:
    return Settings.model_fields[name].description or ""


def format_rows(rows: Iterable[SettingRow]) -> str:
    """The table ``smart-tui check-config`` prints: aligned, plain text."""
    table = [SettingRow("KEY", "VALUE", "SOURCE", "DESCRIPTION"), *rows]
    key_w, value_w, source_w = (max(len(row[col]) for row in table) for col in range(3))
    lines = [
        f"{r.key:<{key_w}}  {r.value_shown:<{value_w}}  {r.source:<{source_w}}  "
        f"{r.doc}".rstrip()
        for r in table
    ]
    return "\n".join(lines)


# --- rewriting --------------------------------------------------------------


def _normalise_changes(path: Path, changes: Mapping[str, str]) -> dict[str, str]:
    normal = {}
    for raw_key, value in changes.items():
        key = raw_key.strip().upper()
        if key not in KEYS:
            raise _unknown_key(str(path), raw_key)
        normal[key] = value
    return normal


def _apply_changes(text: str, path: Path, changes: Mapping[str, str]) -> str:
    lines = lines_with_endings(text)
    seen = set()
    # Bottom-up so earlier line numbers stay valid; every copy of a key changes
    # so an earlier, overridden line does not mislead a reader.
    for item in reversed(parse_config_text(text, str(path))):
        if item.key in changes:
            seen.add(item.key)
            new = rewrite(lines, item, changes[item.key])
            lines[item.first - 1 : item.last] = [new]
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for key, value in changes.items():
        if key not in seen:
            lines.append(f"{key}={shlex.quote(value)}\n")
    return "".join(lines)


def _fsync_dir(folder: Path) -> None:
    with suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            info = path.stat()
            os.chmod(tmp, stat.S_IMODE(info.st_mode))
            # root editing root:smart 0640 must leave the service able to read it.
            with suppress(PermissionError):
                os.chown(tmp, info.st_uid, info.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def update_config_file(path: Path, changes: Mapping[str, str]) -> None:
    """Set KEY=value for each change, keeping everything else; atomic.

    Existing assignments keep their place, ``export`` and comment; new keys are
    appended. The result must validate, else ConfigError and the file is untouched.
    A missing file is created (mode 0600: it may hold COACH_TOKEN)."""
    path = Path(path)
    target = Path(os.path.realpath(path))  # write through a symlink, not over it
    normal = _normalise_changes(path, changes)
    text = _read_text(target) if target.exists() else ""
    new_text = _apply_changes(text, path, normal)
    _build(_file_layers(path, new_text))
    try:
        _atomic_write(target, new_text)
    except OSError as exc:
        if target.exists() and target.stat().st_uid == 0 and os.geteuid() != 0:
            fix = f"root owns it (the root helper trusts it): `sudoedit {path}`"
        else:
            fix = "check the folder's permissions"
        raise ConfigError(
            f"cannot write config file {path}: {exc.strerror}; {fix}"
        ) from None
