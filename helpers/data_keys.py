"""What of a profile's data section goes into a stage's cache key: its knobs and the content
of every local file it names (an edited file is read again; an added extra set rebuilds nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cache import file_key
from .profiles import Profile


def data_inputs(profile: Profile) -> dict[str, Any]:
    """The data knobs a stage reads; extra evaluation sets are keyed by their own content, so
    adding one never rebuilds the problems, rollouts or adapters."""
    data = profile.to_dict()["data"]
    data.pop("extra_eval_paths", None)
    return data


def source_file(source: str, split: str) -> str | Path | None:
    """The local file a data source names by itself (a .jsonl path, or gsm8k's shared copy)."""
    if source == "gsm8k":
        from .data import gsm8k_file

        return gsm8k_file(split)
    if source.endswith(".jsonl") or Path(source).is_file():
        return source
    return None


def data_file_keys(profile: Profile) -> dict[str, Any]:
    """Content keys (cache.file_key) of every local file the profile's data section may read.

    A path that is not read in the end only costs a hash; a file that is read and left out
    would let an edited file reuse stale problems.
    """
    d = profile.data
    files = {
        "train_path": d.train_path,
        "eval_path": d.eval_path,
        "train_source": source_file(d.train_source, "train"),
        "eval_source": source_file(d.eval_source, "test"),
    }
    return {name: file_key(path) for name, path in files.items() if path is not None}
