"""Run folders: each stage's output lives in a folder keyed by a hash of its inputs.

A stage is built in a temporary sibling folder and renamed into place only when it
is complete (a DONE marker records the inputs), so a run killed half-way leaves
nothing a rerun would trust, and a rerun reuses every finished stage. Temporary
folders carry the host and pid of their writer, so concurrent writers never share
one and the next run removes those of processes that died (SIGKILL) on this host.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DONE = "DONE.json"
# `.<name>.<kind>-<host>-<pid>-<8 hex>`: what remove_stale may delete once <pid> is dead on <host>.
_SCRATCH = re.compile(r"^\..+\.(tmp|old)-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


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


def stage_folder(stage: str, inputs: dict[str, Any], root: str | os.PathLike | None = None) -> Path:
    """Where `cached_stage` puts the finished folder of `stage` for `inputs`."""
    root = Path(root) if root is not None else runs_root()
    return root / f"{stage}-{stable_hash(inputs)}"


def cached_stage(
    stage: str,
    inputs: dict[str, Any],
    build: Callable[[Path], Any],
    root: str | os.PathLike | None = None,
) -> Path:
    """Return the finished folder of `stage` for `inputs`, building it first if needed.

    `build(tmp_dir)` writes everything into `tmp_dir` (a sibling named with this host and
    pid); the folder is renamed to `<root>/<stage>-<hash>` only after `build` returns. If
    another process finished the same stage meanwhile, its folder is kept and ours dropped.
    """
    root = Path(root) if root is not None else runs_root()
    final = stage_folder(stage, inputs, root)
    if is_done(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root)
    tmp = scratch_path(final)
    tmp.mkdir()
    try:
        build(tmp)
        atomic_write_json(tmp / DONE, {"stage": stage, "inputs": inputs})
        return publish(tmp, final, is_done)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"


def scratch_path(final: str | os.PathLike, kind: str = "tmp") -> Path:
    """A hidden sibling of `final` unique to this process: `.<name>.<kind>-<host>-<pid>-<random>`.

    kind "tmp" is a folder being written, "old" one being removed; either is deleted by
    `remove_stale` once its writer is dead. Not created here.
    """
    final = Path(final)
    return final.with_name(f".{final.name}.{kind}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale(parent: str | os.PathLike) -> list[Path]:
    """Delete the scratch folders in `parent` whose writer (a process of this host) is dead.

    Only names made by `scratch_path` are considered; those of live processes and of
    other hosts (a shared file system) are left alone. Returns what was removed.
    """
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    host = _host()
    for path in parent.iterdir():
        match = _SCRATCH.match(path.name)
        if match is None or match["host"] != host or _alive(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def publish(tmp: Path, final: Path, complete: Callable[[Path], bool]) -> Path:
    """Rename the finished folder `tmp` to `final`, first writer wins; returns `final`.

    If `final` is already `complete` (another process published it while we built), `tmp`
    is discarded and theirs kept: a complete folder is never deleted or replaced here. An
    incomplete `final` (a leftover without its marker) is moved aside before it is removed.
    """
    while True:
        if complete(final):
            shutil.rmtree(tmp)
            return final
        try:
            os.rename(tmp, final)  # fails when final is a non-empty folder
            return final
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if complete(final):
            continue
        aside = scratch_path(final, "old")
        try:
            os.rename(final, aside)
        except FileNotFoundError:  # another process moved the leftover first
            continue
        if complete(aside):  # published between our check and the move: put it back
            try:
                os.rename(aside, final)
            except OSError:
                pass  # final was published again meanwhile; this duplicate goes with our pid
            continue
        shutil.rmtree(aside, ignore_errors=True)


def replace_folder(tmp: Path, final: Path) -> Path:
    """Put the finished folder `tmp` at `final`, replacing a folder there by renames only.

    The old folder is renamed aside, the new one renamed in, then the old one removed, so
    `final` is at every moment either the whole old or the whole new folder (or, for the
    instant between the two renames, absent); if the second rename fails the old comes back.
    Callers check first that an existing `final` is theirs to replace.
    """
    if not final.exists():
        os.rename(tmp, final)
        return final
    aside = scratch_path(final, "old")
    os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return final


def file_key(paths: str | os.PathLike | Sequence[str | os.PathLike] | None) -> Any:
    """Content key of the user file(s) a stage reads, for its cache inputs.

    A path gives "sha256:<hex>" of its bytes (a folder: of every file's relative path and
    bytes), "missing" when it does not exist; a list gives a list of those; None gives None.
    Editing a file then changes the key, where its path alone would not.
    """
    if paths is None:
        return None
    if not isinstance(paths, str | os.PathLike):
        return [file_key(p) for p in paths]
    path = Path(paths)
    if path.is_file():
        return f"sha256:{_sha256_file(path)}"
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{child.relative_to(path).as_posix()}\0{_sha256_file(child)}\n".encode())
        return f"sha256:{digest.hexdigest()}"
    return "missing"


def _sha256_file(path: Path) -> str:
    # No memo keyed by mtime: an edit within the clock's granularity would keep a stale key.
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
