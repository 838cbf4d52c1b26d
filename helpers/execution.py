"""The run's own record of how the book was executed, and the book page written from it.

`helpers.book` keeps `execution.json` next to the executed notebooks: each chapter's wall time
(and when, and from which commit, it ran), the profile, the machine (CPU model, cores, GPU or
not), the versions of the libraries that did the work and the commit. `page()` turns the
record into `book/execution.md` of the assembled book; nothing on that page is typed by hand.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from .cache import REPO_ROOT, atomic_write_json

RECORD = "execution.json"
PAGE = Path("book") / "execution.md"
# what computes the numbers (torch ... scipy) and what renders them (papermill ... jupyter-book)
LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "tokenizers",
    "numpy",
    "scipy",
    "math-verify",
    "matplotlib",
    "seaborn",
    "papermill",
    "myst-nb",
    "jupyter-book",
)


def now() -> str:
    """The time in UTC, to the second, ISO 8601."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def git_commit(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The checked-out commit and whether the working tree differs from it (None where there is no git)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"sha": None, "dirty": None}
    return {"sha": sha, "dirty": bool(status.strip())}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, logical cores and the cores this process may use, the GPUs (none: CPU only), OS."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "gpus": gpus,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": platform.python_version(),
    }


def libraries() -> dict[str, str]:
    """Installed versions of LIBRARIES (those not installed are left out)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def load(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def update(path: Path, profile: str, started: str, timings: dict[str, float]) -> dict[str, Any]:
    """Add this run's chapters to the record at `path` and write it (atomically).

    Chapters not run this time (`--only`) keep their earlier entries, each with its own time
    and commit; a record of another profile is replaced, not merged."""
    record = load(path) or {}
    if record.get("profile") != profile:
        record = {}
    commit = git_commit()
    chapters = dict(record.get("chapters", {}))
    finished = now()
    for stem, seconds in timings.items():
        chapters[stem] = {"seconds": round(seconds, 1), "finished": finished, "commit": commit["sha"]}
    record = {
        "profile": profile,
        "started": started,
        "finished": finished,
        "commit": commit,
        "machine": machine(),
        "libraries": libraries(),
        "chapters": dict(sorted(chapters.items())),
    }
    atomic_write_json(path, record)
    return record


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def _short(sha: str | None) -> str:
    return f"`{sha[:12]}`" if sha else "unknown (not a git checkout)"


def page(record: dict[str, Any] | None) -> str:
    """The execution page (MyST Markdown) for `record`; a page saying so when there is none."""
    lines = [
        "# Execution",
        "",
        "How and where the chapters of this book were run. `make book` (`helpers.book`) writes this",
        "page from the run's own record (`execution.json` beside the executed notebooks); nothing",
        "here is typed by hand.",
        "",
    ]
    if not record:
        return "\n".join([*lines, "No record of an execution was found for this build.", ""])
    commit, m = record["commit"], record["machine"]
    dirty = " with uncommitted changes" if commit.get("dirty") else ""
    chapters = record["chapters"]
    total = sum(c["seconds"] for c in chapters.values())
    gpus = ", ".join(m["gpus"]) if m["gpus"] else "none (CPU only)"
    lines += [
        "## Run",
        "",
        "| | |",
        "|---|---|",
        f"| profile | `{record['profile']}` |",
        f"| commit | {_short(commit.get('sha'))}{dirty} |",
        f"| started (UTC) | {record['started']} |",
        f"| finished (UTC) | {record['finished']} |",
        f"| chapters' wall time | {_duration(total)} |",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']} |",
        f"| cores | {m['cores']} ({m['usable_cores']} usable by the run) |",
        f"| GPU | {gpus} |",
        f"| system | {m['os']}, Python {m['python']} |",
        "",
        "## Chapters",
        "",
        "Wall time of each notebook, kernel start included. A stage that an earlier run had",
        "already built is read from its cache, so a chapter's time covers only what this run did.",
        "",
        "| chapter | wall time | finished (UTC) | commit |",
        "|---|---:|---|---|",
    ]
    for stem, c in chapters.items():
        lines.append(f"| {stem} | {_duration(c['seconds'])} | {c['finished']} | {_short(c.get('commit'))} |")
    lines += ["", "## Libraries", "", "| package | version |", "|---|---|"]
    lines += [f"| {name} | {version} |" for name, version in record["libraries"].items()]
    return "\n".join([*lines, ""])


def write_page(executed: Path, src: Path) -> Path:
    """Write the execution page of the book assembled in `src` from the record in `executed`."""
    target = src / PAGE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page(load(executed / RECORD)))
    return target
