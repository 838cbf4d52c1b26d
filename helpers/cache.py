"""Run folders: each stage's output lives in a folder keyed by a hash of its inputs.

A stage is built in a temporary sibling folder and renamed into place only when it
is complete (a DONE marker records the inputs), so a run killed half-way leaves
nothing a rerun would trust, and a rerun reuses every finished stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DONE = "DONE.json"


def runs_root() -> Path:
    """Root of all run folders: $WSG_RUNS, else `runs/` in the repository."""
    return Path(os.environ.get("WSG_RUNS", REPO_ROOT / "runs"))


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short sha256 of a JSON-serialisable object (keys sorted, so order does not matter)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a file through a temporary sibling and a rename: readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write `obj` as indented JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: list[dict] | tuple[dict, ...]) -> Path:
    """Atomically write one JSON object per line (a format `datasets` reads)."""
    return atomic_write_text(path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a jsonl file (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _jsonable(obj: Any) -> Any:
    """Turn numpy and torch scalars and arrays into plain Python for json.dumps."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def is_done(folder: str | os.PathLike) -> bool:
    """Whether a stage folder was completed (renamed into place with its marker)."""
    return (Path(folder) / DONE).exists()


def cached_stage(
    stage: str,
    inputs: dict[str, Any],
    build: Callable[[Path], Any],
    root: str | os.PathLike | None = None,
) -> Path:
    """Return the finished folder of `stage` for `inputs`, building it first if needed.

    `build(tmp_dir)` writes everything into `tmp_dir`; the folder is renamed to
    `<root>/<stage>-<hash>` only after `build` returns.
    """
    root = Path(root) if root is not None else runs_root()
    final = root / f"{stage}-{stable_hash(inputs)}"
    if is_done(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        atomic_write_json(tmp / DONE, {"stage": stage, "inputs": inputs})
        if final.exists():  # an unfinished leftover (no marker): never trusted
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
