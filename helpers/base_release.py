"""The shipped tiny base: `data/base/<profile>/` with a manifest of sha256 hashes, and `make base`.

Pretraining the tiny student/teacher costs minutes of every fresh clone's book and its result
depends on the torch thread count, so the repository ships the base and `base_stage` copies it
when the manifest's recorded input key equals the profile's. `python -m helpers.make_base`
rebuilds it from scratch at a pinned thread count.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .cache import REPO_ROOT, atomic_write_json, stable_hash
from .execution import cpu_model, git_commit

MANIFEST = "manifest.json"
# The files a tiny base stage writes (DONE.json is the cache's marker, not the base's).
SKIP = {"DONE.json", MANIFEST}
# make book's notebook kernel runs torch with 2 intra-op threads on the 2-core machine the
# committed base was built on; the checkpoints depend on the thread count (reductions split
# differently: 1 thread picks student step 800, 2 threads step 700), so rebuilds pin it.
THREADS = 2
REBUILD = "make base PROFILE={profile}"


class BaseReleaseError(RuntimeError):
    """A shipped base whose files do not match its manifest."""


def release_root() -> Path:
    """Where shipped bases live: $WSG_BASE_RELEASE (tests), else the repository's data/base."""
    return Path(os.environ.get("WSG_BASE_RELEASE", REPO_ROOT / "data" / "base"))


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of every base file under `folder`, by relative posix path."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() not in SKIP
    }


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def manifest_sha(folder: str | os.PathLike) -> str:
    return sha256(Path(folder) / MANIFEST)


def shipped_for(profile_name: str, key: str) -> Path | None:
    """The shipped base folder of this profile if its manifest records input key `key`."""
    folder = release_root() / profile_name
    manifest = read_manifest(folder)
    return folder if manifest is not None and manifest.get("key") == key else None


def verify(folder: str | os.PathLike) -> dict[str, Any]:
    """Check every file against the manifest; a clear error names the first bad file and the fix."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise BaseReleaseError(f"{folder / MANIFEST} is missing")
    fix = (
        f"restore it with `git checkout {folder}` (and `git lfs pull` if it is an LFS pointer) "
        f"or rebuild with `{REBUILD.format(profile=manifest.get('profile', '<profile>'))}`"
    )
    for rel, want in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise BaseReleaseError(f"shipped base file {path} is missing: {fix}")
        got = sha256(path)
        if got != want:
            raise BaseReleaseError(
                f"shipped base file {path} has sha256 {got[:12]}..., the manifest says {want[:12]}... "
                f"(corrupt, a git-lfs pointer, or edited by hand): {fix}"
            )
    return manifest


def copy_shipped(folder: str | os.PathLike, out: str | os.PathLike) -> None:
    """Verify the shipped base and copy its files into the stage folder `out`; base.json says so."""
    folder, out = Path(folder), Path(out)
    manifest = verify(folder)
    for rel in manifest["files"]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / rel, out / rel)
    base = json.loads((out / "base.json").read_text())
    base["origin"] = {
        "source": "shipped",
        "folder": _shown(folder),
        "manifest_sha256": manifest_sha(folder),
        **{k: manifest[k] for k in ("built", "commit", "torch", "threads", "cpu", "command")},
    }
    atomic_write_json(out / "base.json", base)


def origin(base_folder: str | os.PathLike) -> dict[str, Any]:
    """Where a base stage's models came from, as base.json records it ({"source": "pretrained"} if built here)."""
    base = json.loads((Path(base_folder) / "base.json").read_text())
    return base.get("origin", {"source": "pretrained"})


def origin_markdown(base_folder: str | os.PathLike) -> str:
    """A paragraph for chapter 01: shipped (hash, when, where, how to rebuild) or pretrained in this run."""
    o = origin(base_folder)
    if o["source"] != "shipped":
        return (
            "This base was pretrained in this run (no shipped base matches this profile's inputs); "
            "the curves below were measured on this machine."
        )
    return (
        f"This base was not pretrained in this run: it is the shipped copy in `{o['folder']}` "
        f"(manifest sha256 `{o['manifest_sha256'][:12]}`, every file verified against it), built "
        f"{o['built']} from commit `{o['commit']}` with torch {o['torch']} at {o['threads']} threads on "
        f"CPU `{o['cpu']}`. The pretraining curves below are that build's logs, measured on that "
        f"machine. `{o['command']}` rebuilds it from scratch (another CPU may round differently and "
        "build other checkpoints; the book then uses the rebuilt one)."
    )


def _shown(folder: Path) -> str:
    try:
        return folder.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(folder)


def _commit() -> str:
    """HEAD, with "+dirty" when tracked files differ from it ("unknown" without git)."""
    head = git_commit(REPO_ROOT)
    return "unknown" if head["sha"] is None else head["sha"] + ("+dirty" if head["dirty"] else "")


def write_manifest(folder: Path, profile_name: str, inputs: dict[str, Any], threads: int) -> dict:
    import torch

    manifest = {
        "profile": profile_name,
        "key": stable_hash(inputs),
        "inputs": inputs,
        "files": file_hashes(folder),
        "torch": torch.__version__,
        "threads": threads,
        "cpu": cpu_model(),
        "built": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "command": REBUILD.format(profile=profile_name),
    }
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest
