"""Whole-book benchmark: wall time of each notebook on a profile (tiny) from empty caches, and the total.

    python benchmarks/bench_book.py [--profile tiny] [--keep-runs]

Runs exactly what `make book` runs after the install (papermill on every notebook, then
jupyter-book), in a fresh run folder so no cached stage is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--keep-runs", action="store_true", help="keep the fresh run folder afterwards")
    args = parser.parse_args()
    runs = tempfile.mkdtemp(prefix="wsg-bench-book-")
    os.environ["WSG_RUNS"] = runs
    from helpers import book

    start = time.perf_counter()
    executed = book.BUILD_DIR / "bench" / args.profile
    timings = book.execute(args.profile, executed)
    executed_seconds = time.perf_counter() - start
    book.render(book.assemble(executed, book.BUILD_DIR / "bench-src"), book.BUILD_DIR / "bench-html")
    total = time.perf_counter() - start
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; profile {args.profile}; empty caches")
    for name, seconds in timings.items():
        print(f"{name:32s} {seconds:8.1f} s")
    print(f"{'all notebooks':32s} {executed_seconds:8.1f} s")
    print(f"{'render (jupyter-book)':32s} {total - executed_seconds:8.1f} s")
    print(f"{'total':32s} {total:8.1f} s  ({total / 60:.1f} min)")
    print(json.dumps({"profile": args.profile, "notebooks": timings, "total_seconds": round(total, 1)}))
    if not args.keep_runs:
        shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
