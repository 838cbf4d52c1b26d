"""Whole-book benchmark: wall and CPU time of each notebook and each pipeline stage, from empty caches.

    python benchmarks/bench_book.py [--profile tiny] [--keep-runs] [--json out.json]

Runs exactly what `make book` runs after the install (papermill on every notebook, then
jupyter-book), in a fresh run folder (WSG_RUNS) so no cached stage is reused. Prints the
machine (CPU model from /proc/cpuinfo, torch's thread and MKL settings) first.

Per notebook: wall seconds and CPU seconds (getrusage of this process and its reaped
children, i.e. the notebook kernels), so a busy shared machine shows as CPU < wall x
threads. Per stage: a cached stage finishes when its `.done` marker is written, so a
stage's time is its marker's time minus the previous marker's (or the notebook's start);
pretraining is split from a pretrained base stage with the seconds its log records (a shipped
base, copied from data/base, is one row). What follows
the last stage of a notebook is that notebook's own analysis (plus kernel start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name and vector extensions from /proc/cpuinfo (the platform module otherwise)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line), "?")
    flags = next(
        (line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []
    )
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model} ({vector})"


def torch_threads() -> dict[str, object]:
    """torch's intra-op threads, OpenMP/MKL maxima and the environment variables that set them."""
    import torch

    parallel = torch.__config__.parallel_info()
    found = {}
    for key in ("omp_get_max_threads", "mkl_get_max_threads"):
        line = next((line for line in parallel.splitlines() if key in line), "")
        found[key] = line.split(":")[-1].strip() if line else None
    mkl = next((line.strip() for line in parallel.splitlines() if "Math Kernel Library" in line), "no MKL")
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        **found,
        "mkl": mkl.split(" Build")[0],
        "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {
            k: os.environ.get(k)
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_ENABLE_INSTRUCTIONS", "KMP_AFFINITY")
        },
    }


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def stage_times(root: Path, chapters: dict[str, tuple[float, float]]) -> list[dict]:
    """Split each notebook's wall time over the stages it built, from their `.done` markers."""
    from helpers.cache import DONE

    done = sorted((p.stat().st_mtime, p.parent) for p in root.glob(f"*/{DONE}"))
    rows = []
    for chapter, (begin, end) in chapters.items():
        previous = begin
        for finished, folder in done:
            if not begin <= finished <= end:
                continue
            stage = folder.name.rsplit("-", 1)[0]
            seconds = finished - previous
            pretrain = folder / "pretrain_log.json"
            if stage == "base" and _shipped(folder):  # copied from data/base: its log is the build machine's
                stage = "base: shipped copy, verified and copied"
            elif pretrain.exists():  # the base stage: pretraining, then accuracy probes and saving
                spent = sum(log["seconds"] for log in json.loads(pretrain.read_text()).values())
                rows.append({"chapter": chapter, "stage": "base: pretraining", "seconds": spent})
                stage, seconds = "base: probes, tokenizer, saving", seconds - spent
            rows.append({"chapter": chapter, "stage": stage, "seconds": seconds})
            previous = finished
        rows.append({"chapter": chapter, "stage": "(notebook's own work)", "seconds": end - previous})
    return rows


def _shipped(folder: Path) -> bool:
    """Whether a base stage was copied from the project's shipped base (helpers.base_release)."""
    base = folder / "base.json"
    return base.exists() and json.loads(base.read_text()).get("origin", {}).get("source") == "shipped"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--keep-runs", action="store_true", help="keep the fresh run folder afterwards")
    parser.add_argument("--json", type=Path, help="also write the measurements to this file")
    args = parser.parse_args()
    runs = tempfile.mkdtemp(prefix="wsg-bench-book-")
    os.environ["WSG_RUNS"] = runs
    from helpers import book

    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), **torch_threads()}
    print(f"machine: {machine['cpu']}, {machine['cores']} cores; profile {args.profile}; empty caches")
    print("threads: " + json.dumps({k: v for k, v in machine.items() if k not in ("cpu", "cores")}))
    executed = book.BUILD_DIR / "bench" / args.profile
    chapters: dict[str, tuple[float, float]] = {}
    cpu: dict[str, float] = {}
    start, cpu_start = time.perf_counter(), cpu_seconds()
    for nb in book.notebooks():
        begin, cpu_begin = time.time(), cpu_seconds()
        book.execute(args.profile, executed, only=[nb.stem])
        chapters[nb.stem] = (begin, time.time())
        cpu[nb.stem] = cpu_seconds() - cpu_begin
    executed_seconds = time.perf_counter() - start
    cpu_render = cpu_seconds()
    book.render(book.assemble(executed, book.BUILD_DIR / "bench-src"), book.BUILD_DIR / "bench-html")
    total, cpu_total = time.perf_counter() - start, cpu_seconds() - cpu_start
    stages = stage_times(Path(runs) / args.profile, chapters)

    print(f"\n{'notebook':44s} {'wall s':>8s} {'CPU s':>8s}")
    for name, (begin, end) in chapters.items():
        print(f"{name:44s} {end - begin:8.1f} {cpu[name]:8.1f}")
    print(f"{'all notebooks':44s} {executed_seconds:8.1f} {cpu_render - cpu_start:8.1f}")
    print(f"{'render (jupyter-book)':44s} {total - executed_seconds:8.1f} {cpu_seconds() - cpu_render:8.1f}")
    print(f"{'total':44s} {total:8.1f} {cpu_total:8.1f}  ({total / 60:.1f} min)")
    print(f"\n{'stage (chapter that built it)':44s} {'wall s':>8s}")
    for row in stages:
        if row["seconds"] >= 0.05:
            print(f"{row['stage'][:30]:30s} ({row['chapter'][:11]}) {row['seconds']:8.1f}")
    record = {
        "profile": args.profile,
        "machine": machine,
        "notebooks": {n: round(e - b, 1) for n, (b, e) in chapters.items()},
        "notebooks_cpu": {n: round(s, 1) for n, s in cpu.items()},
        "stages": [{**r, "seconds": round(r["seconds"], 1)} for r in stages],
        "total_seconds": round(total, 1),
        "total_cpu_seconds": round(cpu_total, 1),
    }
    print(json.dumps(record))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    if not args.keep_runs:
        shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
