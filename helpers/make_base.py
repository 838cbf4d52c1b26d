"""`make base`: rebuild a profile's shipped base from scratch (`python -m helpers.make_base`).

Separate from base_release so that pipeline (which reads shipped bases) and this (which runs
pipeline's pretraining) do not import each other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from .base_release import (
    MANIFEST,
    SKIP,
    THREADS,
    BaseReleaseError,
    read_manifest,
    release_root,
    write_manifest,
)
from .cache import REPO_ROOT, scratch_path


def _may_replace(out: Path, profile_name: str) -> bool:
    own = (REPO_ROOT / "data" / "base" / profile_name).resolve()
    return not out.exists() or (out / MANIFEST).exists() or out.resolve() == own


def rebuild(profile_name: str, out: str | os.PathLike | None = None, threads: int = THREADS) -> dict:
    """Pretrain the profile's base from scratch into `out` (atomically) and return the comparison."""
    import torch

    from .pipeline import pretrain_base, source_base_inputs
    from .profiles import load_profile

    profile = load_profile(profile_name)
    out = Path(out) if out is not None else release_root() / profile.name
    if not _may_replace(out, profile.name):
        raise BaseReleaseError(f"{out} exists and has no {MANIFEST}: not a base this program wrote; refusing")
    old = read_manifest(out) if out.exists() else None
    torch.set_num_threads(threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = scratch_path(out)
    tmp.mkdir()
    try:
        pretrain_base(profile, tmp)
        for extra in SKIP:
            (tmp / extra).unlink(missing_ok=True)
        manifest = write_manifest(tmp, profile.name, source_base_inputs(profile), threads)
        if out.exists():
            gone = scratch_path(out, "old")
            out.rename(gone)
            tmp.rename(out)
            shutil.rmtree(gone, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    same = None if old is None else old["files"] == manifest["files"]
    return {"out": str(out), "same": same, "manifest": manifest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the shipped tiny base (data/base/<profile>).")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--out", default=None, help="folder to write (default data/base/<profile>)")
    parser.add_argument(
        "--threads", type=int, default=THREADS, help="torch threads (default 2, as make book)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        result = rebuild(args.profile, args.out, args.threads)
    except BaseReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result["same"] is None:
        print(f"wrote {result['out']} (no earlier manifest to compare with)")
    elif result["same"]:
        print(f"wrote {result['out']}: every file's sha256 equals the earlier manifest's")
    else:
        print(
            f"wrote {result['out']}: the hashes DIFFER from the earlier manifest. Pretraining depends on "
            "the CPU and thread count, so another machine may build different checkpoints; the book now "
            "uses the rebuilt base (commit it to ship it)."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
