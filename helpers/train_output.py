"""Where a training run writes, and what it refuses to touch.

A run trains into a fresh hidden sibling of its output folder (named with host and pid, so
concurrent runs never share one and dead ones are cleaned up) and swaps it in at the end.
An existing output folder is replaced only when it is empty or one this program wrote
(it holds `train_meta.json` and `adapter_config.json`); anything else is refused, never deleted.
"""

from __future__ import annotations

import os
from pathlib import Path

from accelerate import PartialState

from helpers.cache import remove_stale, scratch_path

# What makes a folder one of ours to replace: an adapter written by helpers.train.
ADAPTER_MARKERS = ("train_meta.json", "adapter_config.json")


class TrainConfigError(ValueError):
    """A method/control/path combination that cannot be trained; the message says which argument."""


def check_out_dir(out_dir: str | os.PathLike, flag: str = "--out", markers: tuple = ADAPTER_MARKERS) -> None:
    """Refuse an existing `out_dir` unless it is empty or a folder this program wrote (holds `markers`).

    Called before any work, and again just before the finished adapter replaces it.
    """
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise TrainConfigError(f"{flag} {out_dir} is a file, not a folder")
    if not any(out_dir.iterdir()) or all((out_dir / m).is_file() for m in markers):
        return
    raise TrainConfigError(
        f"{flag} {out_dir} is a non-empty folder that this program did not write (it lacks "
        f"{' and '.join(markers)}); refusing to replace it: pass a new or empty folder"
    )


def last_good_path(out_dir: str | os.PathLike) -> Path:
    """Where a diverged run keeps its last finite adapter: beside out_dir, never inside it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f"{out_dir.name}.last_good")


def fresh_tmp(out_dir: Path, state: PartialState) -> Path:
    """An empty sibling folder to train into, unique to this run (host, pid), renamed to out_dir at the end.

    The main process names and makes it (after removing those of dead runs); the other
    processes of a launch receive its name.
    """
    tmp = None
    if state.is_main_process:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out_dir.parent)
        tmp = scratch_path(out_dir)
        tmp.mkdir()
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        tmp = broadcast_object_list([tmp])[0]
    state.wait_for_everyone()
    return Path(tmp)
