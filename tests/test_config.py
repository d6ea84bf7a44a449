"""smart.conf parsing, precedence, provenance, messages and safe rewriting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smart_tui.config import (
    SettingRow,
    describe,
    find_config_file,
    format_rows,
    load_settings,
    update_config_file,
)
from smart_tui.errors import ConfigError, ExitCode
from smart_tui.settings import KEYS, Settings

REPO = Path(__file__).resolve().parents[1]
TOKEN = "abc$HOME#x"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # find_config_file() looks for ./smart.conf; never pick up the repo's copy.
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "smart.conf") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, **env: str) -> Settings:
    return load_settings(path, environ=env)


def error_of(path: Path | None = None, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, **kwargs)  # type: ignore[arg-type]
    assert caught.value.exit_code == ExitCode.BAD_CONFIG
    assert "\n" not in str(caught.value)
    return str(caught.value)


# --- the file format ----------------------------------------------------------


def test_quotes_keep_dollar_and_hash_literally(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "COACH_TOKEN='abc$HOME#x'\n"
        'NGINX_CMD="sudo -n nginx # $PATH"\n'
        "NGINX_CONF=/etc/nginx/nginx.conf\n",
    )
    settings = load(path, HOME="/home/someone")
    assert settings.coach_token.get_secret_value() == TOKEN
    assert settings.nginx_cmd == "sudo -n nginx # $PATH"
    assert settings.nginx_conf == "/etc/nginx/nginx.conf"


def test_export_comments_blank_lines_and_last_assignment_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# a full-line comment\n"
        "\n"
        "export BASELINE_SECONDS=7   # inline comment\n"
        "   IMPROVE_PCT=20\n"
        "IMPROVE_PCT='30' # later line wins, as in bash\n"
        "TARGET_URL=   # empty value then a comment\n",
    )
    settings = load(path)
    assert settings.baseline_seconds == 7
    assert settings.improve_pct == 30
    assert settings.target_url == ""
    assert settings.sources["IMPROVE_PCT"] == "smart.conf:5"
    assert settings.sources["BASELINE_SECONDS"] == "smart.conf:3"


def test_quoted_value_may_span_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "NGINX_CMD='sudo -n\nnginx'\nIMPROVE_PCT=12\n")
    settings = load(path)
    assert settings.nginx_cmd == "sudo -n\nnginx"
    assert settings.sources["IMPROVE_PCT"] == "smart.conf:3"


# --- precedence and provenance ------------------------------------------------


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "BASELINE_SECONDS=10\nEXPERIMENT_SECONDS=20\nCOOLDOWN_SECONDS=30\n"
        "COACH_TOKEN=from-file\n",
    )
    settings = load_settings(
        path,
        overrides={"baseline_seconds": "1"},
        environ={
            "SMART_BASELINE_SECONDS": "2",
            "SMART_EXPERIMENT_SECONDS": "3",
            "COACH_TOKEN": "from-env",
        },
    )
    assert settings.baseline_seconds == 1
    assert settings.experiment_seconds == 3
    assert settings.cooldown_seconds == 30
    assert settings.settle_seconds == 5
    assert settings.coach_token.get_secret_value() == "from-env"
    assert {k: settings.sources[k] for k in ("BASELINE_SECONDS", "COACH_TOKEN")} == {
        "BASELINE_SECONDS": "flag",
        "COACH_TOKEN": "env COACH_TOKEN",
    }
    assert settings.sources["EXPERIMENT_SECONDS"] == "env SMART_EXPERIMENT_SECONDS"
    assert settings.sources["COOLDOWN_SECONDS"] == "smart.conf:3"
    assert settings.sources["SETTLE_SECONDS"] == "default"


def test_prefixed_env_beats_bare_seed_names(tmp_path: Path) -> None:
    env = {"COACH_URL": "http://bare/", "SMART_COACH_URL": "http://prefixed/"}
    settings = load_settings(None, environ=env)
    assert settings.coach_url == "http://prefixed/"
    assert settings.sources["COACH_URL"] == "env SMART_COACH_URL"


def test_unknown_smart_env_vars_are_ignored() -> None:
    settings = load_settings(None, environ={"SMART_FOO": "1", "SMART_IMPROVE_PC": "x"})
    assert settings.improve_pct == 10
    assert settings.config_file is None


def test_bare_settings_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMART_IMPROVE_PCT", "50")
    assert Settings().improve_pct == 10
    assert Settings(improve_pct=20).improve_pct == 20


# --- BASE_DIR and paths -------------------------------------------------------


def test_base_dir_defaults_to_the_config_folder(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    settings = load(path)
    assert settings.base_dir == tmp_path
    assert settings.experiments_path == tmp_path / "experiments"
    assert settings.database_path == tmp_path / "var" / "smart.db"
    assert settings.var_path == tmp_path / "var"
    assert settings.www_path == tmp_path / "www"
    assert settings.nginx_conf_path is None


def test_relative_base_dir_in_file_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(
        tmp_path / "etc",
        "BASE_DIR=../srv\nVAR_DIR=/abs/var\nNGINX_CONF=conf/nginx.conf\n",
    )
    settings = load(path)
    assert settings.base_dir == tmp_path / "srv"
    assert settings.experiments_path == tmp_path / "srv" / "experiments"
    assert settings.var_path == Path("/abs/var")
    assert settings.nginx_conf_path == tmp_path / "srv" / "conf" / "nginx.conf"


def test_base_dir_from_env_is_relative_to_cwd_and_finds_the_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "site").mkdir()
    write(tmp_path / "site", "IMPROVE_PCT=15\n")
    settings = load_settings(None, environ={"BASE_DIR": "site"})
    assert settings.base_dir == tmp_path / "site"
    assert settings.improve_pct == 15
    assert settings.config_reason == "found in BASE_DIR"


# --- choosing the file --------------------------------------------------------


def test_find_config_file_order(tmp_path: Path) -> None:
    flag = write(tmp_path, "", "flag.conf")
    env = write(tmp_path, "", "env.conf")
    assert find_config_file(flag, {"SMART_CONFIG": str(env)}) == (
        flag,
        "given by --config",
    )
    assert find_config_file(None, {"SMART_CONFIG": str(env)}) == (
        env,
        "given by SMART_CONFIG",
    )
    assert find_config_file(None, {}) == (None, "none found; defaults only")
    write(tmp_path, "")
    assert find_config_file(None, {}) == (
        Path("smart.conf"),
        "found in the current folder",
    )


def test_smart_config_chooses_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "PROBE_CONNECTIONS=3\n", "other.conf")
    settings = load_settings(None, environ={"SMART_CONFIG": str(path)})
    assert settings.probe_connections == 3
    assert settings.config_file == path
    assert settings.sources["PROBE_CONNECTIONS"] == "other.conf:1"


def test_missing_explicit_file() -> None:
    assert error_of(Path("/x/nope.conf"), environ={}) == (
        "config file /x/nope.conf not found (given by --config); "
        "create it or point --config at an existing file"
    )
    assert error_of(environ={"SMART_CONFIG": "/x/nope.conf"}) == (
        "config file /x/nope.conf not found (given by SMART_CONFIG); "
        "create it or point SMART_CONFIG at an existing file"
    )


# --- messages -----------------------------------------------------------------


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path, "\n" * 6 + "IMPROVE_PC=5\n")
    assert error_of(path, environ={}) == (
        f"{path}:7: unknown key IMPROVE_PC; did you mean IMPROVE_PCT?"
    )


def test_unknown_key_without_a_close_match(tmp_path: Path) -> None:
    path = write(tmp_path, "ZZZ=1\n")
    assert error_of(path, environ={}) == (
        f"{path}:1: unknown key ZZZ; see `smart-tui check-config` for the known keys"
    )


def test_unknown_override_key() -> None:
    assert error_of(None, overrides={"improve_pc": "5"}, environ={}) == (
        "--set: unknown key improve_pc; did you mean IMPROVE_PCT?"
    )


def test_bad_type_names_line_key_and_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "\n\nBASELINE_SECONDS=abc\n")
    assert error_of(path, environ={}) == (
        f"{path}:3: BASELINE_SECONDS='abc' is not a number; "
        "expected seconds > 0, e.g. BASELINE_SECONDS=300"
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("IMPROVE_PCT", "100", "a percentage above 0 and below 100"),
        ("CONFIDENCE", "0.3", "a fraction from 0.5 to 0.999"),
        ("PROBE_CONNECTIONS", "0", "a whole number 1..10000"),
        ("COOLDOWN_SECONDS", "-1", "seconds >= 0"),
    ],
)
def test_out_of_range(tmp_path: Path, key: str, value: str, expected: str) -> None:
    path = write(tmp_path, f"{key}={value}\n")
    message = error_of(path, environ={})
    assert message.startswith(f"{path}:1: {key}='{value}' is out of range; ")
    assert f"expected {expected}, e.g. {key}=" in message


def test_env_and_flag_errors_name_their_source() -> None:
    assert error_of(None, environ={"SMART_CONFIDENCE": "2"}) == (
        "env SMART_CONFIDENCE: CONFIDENCE='2' is out of range; "
        "expected a fraction from 0.5 to 0.999, e.g. CONFIDENCE=0.95"
    )
    assert error_of(None, overrides={"approval": "never"}, environ={}) == (
        "--set APPROVAL: APPROVAL='never' is not one of the choices; "
        "expected auto or manual, e.g. APPROVAL=auto"
    )


def test_bad_url(tmp_path: Path) -> None:
    path = write(tmp_path, "TARGET_URL=ftp://x/\n")
    assert error_of(path, environ={}) == (
        f"{path}:1: TARGET_URL='ftp://x/' is not an http(s):// URL; expected empty "
        "or an http(s):// URL, e.g. TARGET_URL=http://127.0.0.1:8080/"
    )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("X='abc", "unterminated quote; close the ' opened on this line"),
        ('X="abc', 'unterminated quote; close the " opened on this line'),
        (
            "echo hi",
            "expected KEY=value, found the command 'echo'; only assignments are "
            "allowed",
        ),
        (
            # A wrapped secret is never echoed back.
            "https://hooks.slack.com/services/T0/B0/SECRETxyz",
            "expected KEY=value, found a line without KEY=; only assignments are "
            "allowed",
        ),
        (
            "SLACK_WEBHOOK_URL:https://hooks.slack.com/SECRET",
            "expected KEY=value, found a line without KEY=; only assignments are "
            "allowed",
        ),
        (
            "IMPROVE_PCT = 5",
            "expected IMPROVE_PCT=value, found spaces around =; remove them",
        ),
        (
            "IMPROVE_PCT= 5",
            "expected IMPROVE_PCT=value, found a space after =; remove it",
        ),
        (
            "IMPROVE_PCT=$(date)",
            "unexpected '('; nothing is run, so write one "
            "KEY=value per line and quote a value containing (",
        ),
        (
            "IMPROVE_PCT=5; echo",
            "unexpected ';'; nothing is run, so write one "
            "KEY=value per line and quote a value containing ;",
        ),
    ],
)
def test_bad_syntax(tmp_path: Path, line: str, problem: str) -> None:
    path = write(tmp_path, f"# header\n\n\n{line}\nIMPROVE_PCT=5\n")
    assert error_of(path, environ={}) == f"{path}:4: {problem}"


def test_secrets_never_appear_in_messages(tmp_path: Path) -> None:
    for text in ("COACH_TOKEN = s3cr3t", "COACH_TOKEN s3cr3t", "COACH_TOKEN=a s3cr3t"):
        message = error_of(write(tmp_path, text, "bad.conf"), environ={})
        assert "s3cr3t" not in message
    bad_url = {"SMART_COACH_URL": "ftp://user:s3cr3t@host/?key=s3cr3t"}
    message = error_of(None, environ=bad_url)
    assert "s3cr3t" not in message
    assert "COACH_URL='ftp://****@host/?****'" in message


# --- describe -----------------------------------------------------------------


def test_describe_sources_and_masking(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "COACH_TOKEN='abc$HOME#x'\nCOACH_URL=https://me:pw@coach.test/a?key=k2\n",
    )
    settings = load_settings(
        path, overrides={"LOG_LEVEL": "debug"}, environ={"SMART_IMPROVE_PCT": "12"}
    )
    rows = {row.key: row for row in describe(settings)}
    assert list(rows) == list(KEYS)
    assert rows["COACH_TOKEN"] == SettingRow(
        "COACH_TOKEN", "****", "smart.conf:1", "Token sent to the coach; never shown."
    )
    assert rows["COACH_URL"].value_shown == "https://****@coach.test/a?****"
    assert rows["IMPROVE_PCT"][1:3] == ("12", "env SMART_IMPROVE_PCT")
    assert rows["LOG_LEVEL"][1:3] == ("DEBUG", "flag")
    assert rows["BASE_DIR"][1:3] == (str(tmp_path), "default")
    assert rows["BASELINE_SECONDS"][1:3] == ("300", "default")
    assert all(row.doc for row in rows.values())
    text = format_rows(describe(settings))
    for secret in (TOKEN, "pw", "k2"):
        assert secret not in text
    lines = text.splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "SOURCE", "DESCRIPTION"]
    column = lines[0].index("SOURCE")
    assert all(line[column - 2 : column] == "  " for line in lines)


def test_empty_token_is_shown_as_empty() -> None:
    rows = {r.key: r for r in describe(load_settings(None, environ={}))}
    assert rows["COACH_TOKEN"].value_shown == "(empty)"


# --- update_config_file -------------------------------------------------------

ORIGINAL = """\
# top comment
export BASELINE_SECONDS=300   # measure first
  IMPROVE_PCT="10"#tight
COACH_TOKEN=   # secret

LOG_LEVEL=INFO
"""


def test_update_keeps_comments_order_and_export(tmp_path: Path) -> None:
    path = write(tmp_path, ORIGINAL)
    update_config_file(
        path,
        {"baseline_seconds": "5", "IMPROVE_PCT": "12.5", "COACH_TOKEN": "a b$c"},
    )
    update_config_file(path, {"NGINX_CMD": "sudo -n nginx"})
    assert path.read_text() == (
        "# top comment\n"
        "export BASELINE_SECONDS=5   # measure first\n"
        "  IMPROVE_PCT=12.5#tight\n"
        "COACH_TOKEN='a b$c'   # secret\n"
        "\n"
        "LOG_LEVEL=INFO\n"
        "NGINX_CMD='sudo -n nginx'\n"
    )
    settings = load(path)
    assert settings.coach_token.get_secret_value() == "a b$c"
    assert settings.nginx_cmd == "sudo -n nginx"


def test_update_changes_every_copy_of_a_key(tmp_path: Path) -> None:
    path = write(tmp_path, "IMPROVE_PCT=5\nIMPROVE_PCT=6 # later\n")
    update_config_file(path, {"IMPROVE_PCT": "7"})
    assert path.read_text() == "IMPROVE_PCT=7\nIMPROVE_PCT=7 # later\n"


def test_update_rejects_invalid_result_and_leaves_file(tmp_path: Path) -> None:
    path = write(tmp_path, ORIGINAL)
    with pytest.raises(ConfigError) as caught:
        update_config_file(path, {"IMPROVE_PCT": "abc"})
    assert str(caught.value) == (
        f"{path}:3: IMPROVE_PCT='abc' is not a number; expected a percentage "
        "above 0 and below 100, e.g. IMPROVE_PCT=10"
    )
    with pytest.raises(ConfigError, match="did you mean IMPROVE_PCT"):
        update_config_file(path, {"IMPROVE_PC": "5"})
    assert path.read_text() == ORIGINAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smart.conf"]


def test_update_is_atomic_when_the_replace_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, ORIGINAL)
    path.chmod(0o640)

    def failing_replace(src: str, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ConfigError, match="No space left on device"):
        update_config_file(path, {"IMPROVE_PCT": "12"})
    assert path.read_text() == ORIGINAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smart.conf"]
    monkeypatch.undo()
    update_config_file(path, {"IMPROVE_PCT": "12"})
    assert path.stat().st_mode & 0o777 == 0o640


def test_update_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "new.conf"
    update_config_file(path, {"COACH_TOKEN": TOKEN})
    assert path.read_text() == "COACH_TOKEN='abc$HOME#x'\n"
    assert path.stat().st_mode & 0o777 == 0o600


# --- the shipped file ---------------------------------------------------------


def test_shipped_smart_conf_loads_with_all_defaults() -> None:
    settings = load(REPO / "smart.conf")
    defaults = Settings(base_dir=REPO)
    assert settings.model_dump() == defaults.model_dump()
    assert settings.sources["BASELINE_SECONDS"].startswith("smart.conf:")
    assert set(settings.sources) - {"BASE_DIR"} == {
        key for key, source in settings.sources.items() if source != "default"
    }
