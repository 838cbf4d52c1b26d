"""Execute every notebook headless with papermill, then render the book with jupyter-book 1.x.

`python -m helpers.book --profile tiny` is what `make book` runs. Executed copies go to
`_build/executed/<profile>/` (the committed notebooks stay output-free); the book is
assembled in `_build/src/` and rendered to `_build/html` with warnings as errors.
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

from .cache import REPO_ROOT, atomic_write_json
from .cli import add_debug_flag, reports_errors

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BUILD_DIR = REPO_ROOT / "_build"


def notebooks() -> list[Path]:
    """The book's notebooks in chapter order (`NN_topic.ipynb`)."""
    return sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def execute(
    profile: str, out_dir: Path, only: list[str] | None = None, kernel: str = "python3"
) -> dict[str, float]:
    """Run each notebook with papermill on `profile`; returns wall seconds per notebook.

    A notebook is written to a temporary name and renamed when it finished, so a failed
    run never leaves an executed copy that looks complete.
    """
    import papermill

    # The rendered book shows results, not progress bars and library deprecation notices;
    # kernels inherit these (interactive runs keep both).
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for nb in notebooks():
        if only and not any(nb.stem.startswith(o) for o in only):
            continue
        target = out_dir / nb.name
        partial = out_dir / f".{nb.stem}.partial.ipynb"
        print(f"[book] executing {nb.name} on profile {profile}", flush=True)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(nb),
                str(partial),
                parameters={"PROFILE": profile},
                kernel_name=kernel,
                cwd=str(NOTEBOOK_DIR),
                progress_bar=False,
            )
        except Exception:
            failed = out_dir / f"{nb.stem}.failed.ipynb"
            if partial.exists():
                os.replace(partial, failed)
                print(f"[book] {nb.name} failed; the executed copy is at {failed}", file=sys.stderr)
            raise
        os.replace(partial, target)
        timings[nb.stem] = time.perf_counter() - start
        print(f"[book] {nb.name}: {timings[nb.stem]:.1f} s", flush=True)
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
    return src


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
