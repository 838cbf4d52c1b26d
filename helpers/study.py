"""The study's headline numbers (arXiv 2606.23740) as data, read from data/study.yaml.

The book sets our numbers beside these; reading them from one data file, not from
prose, keeps every table and every verdict on the same figures.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from .cache import REPO_ROOT

STUDY_FILE = REPO_ROOT / "data" / "study.yaml"
KINDS = ("value", "approx", "range", "at_least", "above", "below", "points")
REQUIRED = ("key", "description", "kind", "value", "unit", "section")
OPTIONAL = ("row",)
_PREFIX = {"value": "", "approx": "about ", "at_least": ">= ", "above": "> ", "below": "< "}


class StudyError(ValueError):
    """A study file that cannot be used; the message names the file, the entry and the field."""


def _check_entry(entry: Any, index: int, source: str) -> dict[str, Any]:
    """Validate one entry and turn its value into floats."""
    if not isinstance(entry, dict):
        raise StudyError(f"{source}: entry {index} must be a mapping, got {type(entry).__name__}")
    where = f"{source}: entry {index} ({entry.get('key', '?')})"
    missing = [f for f in REQUIRED if f not in entry]
    if missing:
        raise StudyError(f"{where}: missing field(s) {', '.join(missing)}")
    # Unknown fields are refused: an unquoted comma in a YAML flow mapping silently makes one.
    unknown = [str(f) for f in entry if f not in REQUIRED + OPTIONAL]
    if unknown:
        raise StudyError(f"{where}: unknown field(s) {', '.join(unknown)} (quote text that holds commas)")
    kind, value = entry["kind"], entry["value"]
    if kind not in KINDS:
        raise StudyError(f"{where}: `kind` must be one of {', '.join(KINDS)}, got {kind!r}")
    try:
        numbers = [float(v) for v in value] if isinstance(value, list) else [float(value)]
    except (TypeError, ValueError):
        raise StudyError(f"{where}: `value` must be a number or a list of numbers, got {value!r}") from None
    if not all(math.isfinite(v) for v in numbers):
        raise StudyError(f"{where}: `value` must be finite, got {value!r}")
    if kind == "range" and (len(numbers) != 2 or numbers[0] > numbers[1]):
        raise StudyError(f"{where}: a range needs `value: [low, high]` with low <= high, got {value!r}")
    if kind == "points" and len(numbers) < 2:
        raise StudyError(f"{where}: `points` needs at least two values, got {value!r}")
    if kind not in ("range", "points") and isinstance(value, list):
        raise StudyError(f"{where}: kind {kind!r} takes one number, got a list {value!r}")
    out = dict(entry)
    out["value"] = numbers if isinstance(value, list) else numbers[0]
    return out


def load_study(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The study's quantities keyed by their dotted key (e.g. "global_cosine.sft_rft").

    Each entry: key, description, kind, value (float, or [low, high] / a list for
    ranges and points), unit, section, and `row` (STUDY.md's table row) for numbers.
    """
    path = Path(path) if path is not None else STUDY_FILE
    if not path.is_file():
        raise StudyError(f"study file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise StudyError(f"{path}: expected a mapping with a list under `entries`")
    study: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(raw["entries"]):
        checked = _check_entry(entry, index, str(path))
        if checked["key"] in study:
            raise StudyError(f"{path}: entry {index}: duplicate key {checked['key']!r}")
        study[checked["key"]] = checked
    return study


def study_value(study: dict[str, dict[str, Any]], key: str) -> float | list[float] | None:
    """The value of one quantity, or None when the study does not give it."""
    entry = study.get(key)
    return None if entry is None else entry["value"]


def format_entry(entry: dict[str, Any]) -> str:
    """A quantity as the study states it: "about 0.74", "0.057 to 0.065", ">= 0.99"."""
    value, kind = entry["value"], entry["kind"]
    unit = f" {entry['unit']}" if entry.get("unit") in ("%", "deg") else ""
    if kind == "range":
        return f"{value[0]:g} to {value[1]:g}{unit}"
    if kind == "points":
        return " -> ".join(f"{v:g}" for v in value) + unit
    return f"{_PREFIX[kind]}{value:g}{unit}"


def study_frame(study: dict[str, dict[str, Any]]):
    """All quantities as a pandas DataFrame (key, description, stated value, unit, section)."""
    import pandas as pd

    rows = [
        {
            "key": e["key"],
            "description": e["description"],
            "value": format_entry(e),
            "unit": e["unit"],
            "section": e["section"],
        }
        for e in study.values()
    ]
    return pd.DataFrame(rows)
