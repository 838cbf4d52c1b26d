"""The numbers each notebook writes (one JSON per notebook), which tests and 07_findings read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cache import atomic_write_json, read_json, runs_root


def results_dir(profile: str) -> Path:
    """Folder of a profile's notebook results."""
    return runs_root() / profile / "results"


def save_results(profile: str, notebook: str, numbers: dict[str, Any]) -> Path:
    """Write a notebook's numbers atomically to `<runs>/<profile>/results/<notebook>.json`."""
    return atomic_write_json(results_dir(profile) / f"{notebook}.json", numbers)


def load_results(profile: str, notebook: str | None = None) -> dict[str, Any]:
    """One notebook's numbers, or all of them keyed by notebook name (missing ones absent)."""
    folder = results_dir(profile)
    if notebook is not None:
        return read_json(folder / f"{notebook}.json")
    return {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))}
