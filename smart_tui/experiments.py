"""Experiments: folders ``experiments/NNN_name/`` holding ``meta.json`` and scripts.

``discover`` lists every folder with a ``meta.json``; a folder whose definition is
broken becomes a ``BrokenExperiment`` carrying one error line, so one bad experiment
never hides the others. The schema is the bash seed's, plus optional probe hints."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from smart_tui.errors import ExperimentError

META_FILE = "meta.json"
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")

# What each field must hold, phrased as the fix in an error message.
_FIELD_HINTS: dict[str, str] = {
    "id": 'a string equal to the folder name, e.g. "001_nginx_workers"',
    "description": "a one-line string",
    "variants": 'a list like [{"name": "baseline", "apply": "true"}, ...]',
    "name": 'a short name such as "auto" (letters, digits, _ . -)',
    "apply": 'a shell command run in the experiment folder, e.g. "./apply.sh on"',
    "revert": 'a shell command, e.g. "./revert.sh"',
    "target_url": 'an http(s) URL or a path starting with "/", e.g. "/app/"',
    "measure_interval_sec": "a positive number of seconds, e.g. 5",
    "headers": 'an object of header names to values, e.g. {"Accept-Encoding": "gzip"}',
    "rate_rps": "a request rate >= 0, e.g. 200",
    "touches": 'a list of file paths the scripts edit, e.g. ["/etc/nginx/nginx.conf"]',
    "marker_header": 'a response header only the variant sends, e.g. "X-Cache-Status"',
    "source": 'where measurements come from: "probe", "script", "access_log" or "wrk"',
    "measure": 'a shell command printing samples, e.g. "./measure.sh"',
    "access_log": 'the nginx access log path to read, e.g. "/var/log/nginx/access.log"',
}


class Variant(BaseModel):
    """One configuration to try; the first variant is the baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    apply: str = Field(min_length=1)


class ExperimentMeta(BaseModel):
    """The contents of ``meta.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    description: str = ""
    variants: list[Variant] = Field(min_length=2)
    revert: str = Field(default="./revert.sh", min_length=1)
    target_url: str = "/"
    measure_interval_sec: float = Field(default=5.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    rate_rps: float | None = Field(default=None, ge=0)
    touches: list[str] = Field(default_factory=list)
    marker_header: str | None = None
    # Measurement source (README: Measurement sources); the probe unless named.
    source: Literal["probe", "script", "access_log", "wrk"] = "probe"
    measure: str = Field(default="./measure.sh", min_length=1)
    access_log: str | None = Field(default=None, min_length=1)

    @field_validator("target_url")
    @classmethod
    def _url_or_path(cls, value: str) -> str:
        if value.startswith(("http://", "https://", "/")):
            return value
        raise ValueError("not a URL or path")

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        # Sent verbatim by the probe: a CR/LF would inject a header or a request.
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name) or any(c in value for c in "\r\n"):
                raise ValueError(f"header {name!r} is not a plain Name: value")
        return headers

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, variants: list[Variant]) -> list[Variant]:
        names = [variant.name for variant in variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names repeat")
        return variants


@dataclass(frozen=True)
class Experiment:
    """A valid experiment and the folder it lives in."""

    path: Path
    meta: ExperimentMeta

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def baseline(self) -> Variant:
        return self.meta.variants[0]

    @property
    def candidates(self) -> list[Variant]:
        """The variants tried against the baseline, in order."""
        return self.meta.variants[1:]

    def resolve_url(self, base_url: str) -> str:
        """The probe's URL: ``target_url`` itself, or joined to ``base_url``."""
        if self.meta.target_url.startswith("/"):
            return base_url.rstrip("/") + self.meta.target_url
        return self.meta.target_url

    def watched(self, nginx_conf: Path) -> list[Path]:
        """The files a run snapshots and restores: ``touches`` (relative ones are in
        the experiment's folder, where its scripts run), else the nginx config."""
        return [self.path / path for path in self.meta.touches] or [nginx_conf]

    def variant(self, name: str) -> Variant:
        for variant in self.meta.variants:
            if variant.name == name:
                return variant
        known = ", ".join(v.name for v in self.meta.variants)
        raise ExperimentError(
            f"{self.path / META_FILE}: no variant named {name!r}; known: {known}"
        )


@dataclass(frozen=True)
class BrokenExperiment:
    """A folder with a ``meta.json`` that failed validation."""

    path: Path
    error: str

    @property
    def id(self) -> str:
        return self.path.name


def _describe_validation_error(meta_path: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    field = next(
        (str(part) for part in reversed(first["loc"]) if isinstance(part, str)), ""
    )
    hint = _FIELD_HINTS.get(field, "see README: How to write an experiment")
    if first["type"] == "missing":
        problem = "is missing"
    elif first["type"] == "extra_forbidden":
        return f"{meta_path}: unknown field {location!r}; remove it or fix its spelling"
    else:
        message = first["msg"][:1].lower() + first["msg"][1:]
        problem = f"is invalid ({message}; got {first['input']!r})"
    return f"{meta_path}: field {location!r} {problem}; expected {hint}"


def load(path: Path) -> Experiment:
    """Read and validate one experiment folder, or raise ``ExperimentError``."""
    meta_path = path / META_FILE
    try:
        raw_text = meta_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentError(
            f"{meta_path}: not found; every experiment folder needs a meta.json"
        ) from None
    except OSError as exc:
        raise ExperimentError(f"{meta_path}: cannot read ({exc.strerror})") from None

    try:
        raw: Any = json.loads(raw_text)
    except json.JSONDecodeError as exc:
        raise ExperimentError(
            f"{meta_path}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg}); "
            "fix the syntax, e.g. with `python3 -m json.tool`"
        ) from None
    if not isinstance(raw, dict):
        raise ExperimentError(f"{meta_path}: expected a JSON object at the top level")

    try:
        meta = ExperimentMeta.model_validate(raw)
    except ValidationError as exc:
        raise ExperimentError(_describe_validation_error(meta_path, exc)) from None
    if meta.id != path.name:
        raise ExperimentError(
            f"{meta_path}: field 'id' is {meta.id!r} but the folder is "
            f"{path.name!r}; make them equal"
        )
    return Experiment(path=path, meta=meta)


def discover(experiments_dir: Path) -> list[Experiment | BrokenExperiment]:
    """Every folder below ``experiments_dir`` with a meta.json, sorted by name."""
    if not experiments_dir.is_dir():
        raise ExperimentError(
            f"experiments folder {experiments_dir} not found; set EXPERIMENTS_DIR "
            "in smart.conf or create it"
        )
    found: list[Experiment | BrokenExperiment] = []
    for meta_path in sorted(experiments_dir.glob(f"*/{META_FILE}")):
        try:
            found.append(load(meta_path.parent))
        except ExperimentError as exc:
            found.append(BrokenExperiment(path=meta_path.parent, error=exc.message))
    return found


def find(experiments_dir: Path, experiment_id: str) -> Experiment:
    """The valid experiment named ``experiment_id``, or an ``ExperimentError``."""
    entries = discover(experiments_dir)
    for entry in entries:
        if entry.id != experiment_id:
            continue
        if isinstance(entry, BrokenExperiment):
            raise ExperimentError(entry.error)
        return entry
    known = ", ".join(entry.id for entry in entries) or "none"
    raise ExperimentError(
        f"no experiment {experiment_id!r} in {experiments_dir}; known: {known}"
    )
