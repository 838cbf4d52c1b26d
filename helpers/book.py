"""Execute every notebook headless with papermill, then render the book with jupyter-book 1.x.

`python -m helpers.book --profile tiny` is what `make book` runs. Executed copies go to
`_build/executed/<profile>/` (the committed notebooks stay output-free); the book is
assembled in `_build/src/` and rendered to `_build/html` with warnings as errors.
While the notebooks run, the terminal shows the stages' progress (helpers.progress) and the
kernels run over IPC (no transport warning); `execution.json` records the run, and the book's
execution page is written from it (helpers.execution).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import execution, progress
from .cache import REPO_ROOT, atomic_write_json
from .cli import add_debug_flag, reports_errors

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BUILD_DIR = REPO_ROOT / "_build"


def notebooks() -> list[Path]:
    """The book's notebooks in chapter order (`NN_topic.ipynb`)."""
    return sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def kernel_manager_class() -> type | None:
    """A kernel manager that talks to the kernel over IPC (Unix sockets), where it can: over TCP
    ipykernel prints "Kernel is running over TCP without encryption" for every notebook. None
    (papermill's default, TCP) where there are no Unix sockets or the socket path would be too long."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import CaselessStrEnum

    # the sockets are <runtime dir>/kernel-<uuid>-ipc-<port>; AF_UNIX paths end at 107 bytes
    if os.name != "posix" or len(jupyter_runtime_dir()) > 107 - 60:
        return None

    class IpcKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    return IpcKernelManager


def book_eta(previous: dict[str, Any] | None, queue: list[str], current: str, elapsed: float) -> float | None:
    """Seconds left, from the previous run's chapter times: what `current` has still to go plus the
    chapters after it in `queue`. None when an earlier time is missing for any of them."""
    chapters = (previous or {}).get("chapters", {})
    rest = queue[queue.index(current) :]
    if any(stem not in chapters for stem in rest):
        return None
    return max(0.0, chapters[current]["seconds"] - elapsed) + sum(chapters[s]["seconds"] for s in rest[1:])


def execute(
    profile: str, out_dir: Path, only: list[str] | None = None, kernel: str = "python3"
) -> dict[str, float]:
    """Run each notebook with papermill on `profile`; returns wall seconds per notebook.

    A notebook is written to a temporary name and renamed when it finished, so a failed
    run never leaves an executed copy that looks complete. The progress of the work inside
    the kernels reaches this terminal through a side-channel file (helpers.progress); each
    finished notebook's time goes into `out_dir/execution.json` (helpers.execution).
    """
    import papermill

    # The rendered book shows results, not progress bars and library deprecation notices;
    # kernels inherit these (interactive runs keep both).
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    out_dir.mkdir(parents=True, exist_ok=True)
    queue = [nb for nb in notebooks() if not only or any(nb.stem.startswith(o) for o in only)]
    previous = execution.load(out_dir / execution.RECORD)
    started = execution.now()
    manager = kernel_manager_class()
    engine = {"kernel_manager_class": manager} if manager else {}
    side = out_dir / ".progress.jsonl"
    side.unlink(missing_ok=True)
    saved = os.environ.get(progress.PROGRESS_ENV)
    os.environ[progress.PROGRESS_ENV] = str(side)
    timings: dict[str, float] = {}
    current = {"stem": "", "start": time.perf_counter()}
    monitor = progress.Monitor(side)
    monitor.label = lambda: f"{current['stem']} {progress.duration(time.perf_counter() - current['start'])}"
    monitor.eta = lambda: book_eta(
        previous, [nb.stem for nb in queue], current["stem"], time.perf_counter() - current["start"]
    )
    try:
        with monitor:
            for nb in queue:
                target = out_dir / nb.name
                partial = out_dir / f".{nb.stem}.partial.ipynb"
                monitor.say(f"[book] executing {nb.name} on profile {profile}")
                current.update(stem=nb.stem, start=time.perf_counter())
                try:
                    papermill.execute_notebook(
                        str(nb),
                        str(partial),
                        parameters={"PROFILE": profile},
                        kernel_name=kernel,
                        cwd=str(NOTEBOOK_DIR),
                        progress_bar=False,
                        **engine,
                    )
                except Exception:
                    failed = out_dir / f"{nb.stem}.failed.ipynb"
                    if partial.exists():
                        os.replace(partial, failed)
                        print(f"[book] {nb.name} failed; the executed copy is at {failed}", file=sys.stderr)
                    raise
                os.replace(partial, target)
                # a failed copy from an earlier run (ours) would pass for this run's failure
                (out_dir / f"{nb.stem}.failed.ipynb").unlink(missing_ok=True)
                timings[nb.stem] = time.perf_counter() - current["start"]
                monitor.tick()  # the stages that finished at the notebook's end
                monitor.say(f"[book] {nb.name}: {timings[nb.stem]:.1f} s")
                execution.update(out_dir / execution.RECORD, profile, started, {nb.stem: timings[nb.stem]})
    finally:
        if saved is None:
            os.environ.pop(progress.PROGRESS_ENV, None)
        else:
            os.environ[progress.PROGRESS_ENV] = saved
        side.unlink(missing_ok=True)
    return timings


def assemble(executed: Path, src: Path | None = None) -> Path:
    """Copy the book's sources and the executed notebooks into `src` (default `_build/src`)."""
    src = src or BUILD_DIR / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "book", src / "book")
    shutil.copytree(executed, src / "notebooks", ignore=shutil.ignore_patterns(".*", "*.failed.ipynb"))
    for nb in (src / "notebooks").glob("*.ipynb"):
        _show_only_the_parameters_used(nb)
    execution.write_page(executed, src)
    _set_repository(src / "_config.yml", repository_url())
    return src


def repository_url(root: Path = REPO_ROOT) -> str | None:
    """The web address of the git remote `origin` (an https URL; scp-style git@host:owner/repo
    is rewritten), or None where there is no remote: the book links no repository it cannot name."""
    try:
        url = subprocess.run(
            ["git", "remote", "get-url", "origin"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    if url.startswith("git@") and ":" in url:
        host, path = url[len("git@") :].split(":", 1)
        url = f"https://{host}/{path}"
    if not url.startswith(("https://", "http://")):
        return None  # a local path or ssh:// remote is no address for a reader
    return url.removesuffix(".git")


def _set_repository(config: Path, url: str | None) -> None:
    """Name the repository in the assembled book's `_config.yml` (and show its button) when there is
    one; otherwise blank jupyter-book's default (its own repository) so no page links a made-up one."""
    import yaml

    data = yaml.safe_load(config.read_text())
    data["repository"] = {"url": url or "", "path_to_book": ".", "branch": "main"}
    data.setdefault("html", {})["use_repository_button"] = bool(url)
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def _show_only_the_parameters_used(path: Path) -> None:
    """Hide the notebook's default `parameters` cell; papermill's injected cell shows the values used."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells):
        return
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    nbformat.write(nb, path)


def render(src: Path, html: Path | None = None) -> Path:
    """jupyter-book build with warnings as errors; the html lands in `html` (default `_build/html`)."""
    html = html or BUILD_DIR / "html"
    cmd = [
        str(Path(sys.executable).with_name("jupyter-book")),
        "build",
        str(src),
        "--path-output",
        str(src),
        "-W",
        "--keep-going",
    ]
    subprocess.run(cmd, check=True)
    if html.exists():
        shutil.rmtree(html)
    shutil.move(str(src / "_build" / "html"), html)
    return html


@reports_errors
def main(argv: list[str] | None = None) -> int:
    """Command line: execute the notebooks on a profile and render the book (arguments checked first)."""
    from .profiles import load_profile

    parser = argparse.ArgumentParser(prog="python -m helpers.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--only", default="", help="comma-separated notebook prefixes, e.g. 00,01")
    parser.add_argument("--no-html", action="store_true", help="execute only, do not render")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    load_profile(args.profile)  # a bad profile fails here, not inside the first notebook
    only = [o for o in args.only.split(",") if o]
    stems = [nb.stem for nb in notebooks()]
    unmatched = [o for o in only if not any(stem.startswith(o) for stem in stems)]
    if unmatched:
        parser.error(f"--only {','.join(unmatched)} matches no notebook; notebooks: {', '.join(stems)}")
    executed = BUILD_DIR / "executed" / args.profile
    start = time.perf_counter()
    timings = execute(args.profile, executed, only)
    atomic_write_json(executed / "timings.json", timings)
    if not args.no_html:
        html = render(assemble(executed))
        print(f"[book] rendered {html / 'index.html'}")
    total = time.perf_counter() - start
    width = max(len(k) for k in timings) if timings else 10
    print("\nnotebook".ljust(width + 1), "seconds")
    for name, secs in timings.items():
        print(name.ljust(width), f"{secs:8.1f}")
    print("total (incl. render)".ljust(width), f"{total:8.1f}")
    print(json.dumps({"profile": args.profile, "total_seconds": round(total, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
