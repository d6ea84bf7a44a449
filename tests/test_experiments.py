"""meta.json validation: every broken definition gives one exact, fixable line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smart_tui.errors import ExperimentError
from smart_tui.experiments import BrokenExperiment, Experiment, discover, find, load

REPO = Path(__file__).resolve().parent.parent

GOOD = {
    "id": "010_demo",
    "description": "a demo",
    "variants": [{"name": "baseline", "apply": "true"}, {"name": "on", "apply": "x"}],
    "revert": "./revert.sh",
    "target_url": "/app/",
    "measure_interval_sec": 5,
}


def write_meta(root: Path, name: str, content: str | dict[str, object]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    text = content if isinstance(content, str) else json.dumps(content, indent=2)
    (folder / "meta.json").write_text(text)
    return folder


def error_of(folder: Path) -> str:
    with pytest.raises(ExperimentError) as caught:
        load(folder)
    return caught.value.message


def test_shipped_experiments_are_valid() -> None:
    entries = discover(REPO / "experiments")
    assert [entry.id for entry in entries] == [
        "001_nginx_workers",
        "002_proxy_cache",
        "003_gzip_max",
    ]
    assert all(isinstance(entry, Experiment) for entry in entries)


def test_good_meta_loads_with_baseline_first(tmp_path: Path) -> None:
    experiment = load(write_meta(tmp_path, "010_demo", GOOD))
    assert experiment.baseline.name == "baseline"
    assert [v.name for v in experiment.candidates] == ["on"]
    assert experiment.resolve_url("http://127.0.0.1:9000/") == (
        "http://127.0.0.1:9000/app/"
    )


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    folder = write_meta(tmp_path, "010_demo", '{\n  "id": "010_demo",\n  oops\n}')
    assert error_of(folder) == (
        f"{folder}/meta.json:3:3: malformed JSON (Expecting property name enclosed "
        "in double quotes); fix the syntax, e.g. with `python3 -m json.tool`"
    )


def test_missing_field_names_field_and_expected_shape(tmp_path: Path) -> None:
    meta = {key: value for key, value in GOOD.items() if key != "variants"}
    folder = write_meta(tmp_path, "010_demo", meta)
    assert error_of(folder) == (
        f"{folder}/meta.json: field 'variants' is missing; expected a list like "
        '[{"name": "baseline", "apply": "true"}, ...]'
    )


def test_wrong_type_names_the_value(tmp_path: Path) -> None:
    folder = write_meta(tmp_path, "010_demo", {**GOOD, "measure_interval_sec": "often"})
    assert error_of(folder) == (
        f"{folder}/meta.json: field 'measure_interval_sec' is invalid (input should "
        "be a valid number, unable to parse string as a number; got 'often'); "
        "expected a positive number of seconds, e.g. 5"
    )


def test_variant_without_apply_names_the_nested_field(tmp_path: Path) -> None:
    meta = {**GOOD, "variants": [{"name": "baseline", "apply": "true"}, {"name": "x"}]}
    folder = write_meta(tmp_path, "010_demo", meta)
    assert error_of(folder).startswith(
        f"{folder}/meta.json: field 'variants.1.apply' is missing; expected a shell"
    )


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    folder = write_meta(tmp_path, "010_demo", {**GOOD, "reverts": "x"})
    assert error_of(folder) == (
        f"{folder}/meta.json: unknown field 'reverts'; remove it or fix its spelling"
    )


def test_id_must_match_folder(tmp_path: Path) -> None:
    folder = write_meta(tmp_path, "011_other", GOOD)
    assert "field 'id' is '010_demo' but the folder is '011_other'" in error_of(folder)


def test_broken_experiment_does_not_hide_the_others(tmp_path: Path) -> None:
    write_meta(tmp_path, "010_demo", GOOD)
    write_meta(tmp_path, "020_bad", "[1, 2")
    entries = discover(tmp_path)
    assert isinstance(entries[0], Experiment)
    assert isinstance(entries[1], BrokenExperiment)
    assert "malformed JSON" in entries[1].error
    with pytest.raises(ExperimentError, match="malformed JSON"):
        find(tmp_path, "020_bad")
    with pytest.raises(ExperimentError, match="known: 010_demo, 020_bad"):
        find(tmp_path, "999_nope")


def test_header_with_line_break_is_refused_when_listed(tmp_path: Path) -> None:
    folder = write_meta(
        tmp_path, "010_demo", {**GOOD, "headers": {"X-A": "b\r\nInjected: 1"}}
    )
    assert error_of(folder) == (
        f"{folder}/meta.json: field 'headers' is invalid (value error, header 'X-A' "
        "is not a plain Name: value; got {'X-A': 'b\\r\\nInjected: 1'}); expected an "
        'object of header names to values, e.g. {"Accept-Encoding": "gzip"}'
    )
