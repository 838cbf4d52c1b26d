"""What independent training runs would gain as concurrent single-thread processes.

    python benchmarks/bench_concurrent.py [--runs 4] [--steps 30] [--workers 2]

The book trains its adapters one after another in the notebook's process, with torch's
default threads (one per core). The tiny model's matrices are small, so a second thread
speeds a step up by much less than 2x; several single-thread processes, one per core,
could use the cores fully. This script measures both on the `tiny` shapes: a random
model of the profile's architecture, synthetic graded rollouts (benchmarks/bench_train.py),
the shared LoRA init, and `python -m helpers.train` for --runs SFT runs of --steps steps:

- sequential, 1 thread per process; sequential, --workers threads per process;
- concurrent: --workers single-thread processes at a time.

Wall and CPU seconds (getrusage of the children) for each; nothing is compared against
stored numbers. Where the work would live is helpers/pipeline.py (adapters()).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def launch(
    profile: Path, base: Path, rollouts: Path, init: Path, out: Path, threads: int
) -> subprocess.Popen:
    """One `python -m helpers.train` run with `threads` intra-op threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "helpers.train", "--profile", str(profile), "--method", "sft"]
    cmd += ["--base", str(base), "--rollouts", str(rollouts), "--init", str(init), "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(label: str, runs: int, workers: int, threads: int, work: Path, args: tuple) -> dict:
    """Run `runs` trainings, `workers` at a time; wall and CPU seconds."""
    start, cpu = time.perf_counter(), children_cpu()
    pending = list(range(runs))
    active: list[subprocess.Popen] = []
    while pending or active:
        while pending and len(active) < workers:
            active.append(launch(*args, work / f"{label}-{pending.pop(0)}", threads))
        active[0].wait()
        if active[0].returncode:
            raise RuntimeError(f"{label}: a training run failed (exit {active[0].returncode})")
        active.pop(0)
    return {
        "setting": label,
        "wall_s": round(time.perf_counter() - start, 1),
        "cpu_s": round(children_cpu() - cpu, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    os.environ["WSG_RUNS"] = tempfile.mkdtemp(prefix="wsg-bench-concurrent-")
    from bench_train import random_base, synthetic_rollouts

    from helpers.cache import atomic_write_jsonl
    from helpers.profiles import PROFILE_DIR, load_profile
    from helpers.train import make_lora_init

    work = Path(os.environ["WSG_RUNS"])
    raw = yaml.safe_load((PROFILE_DIR / "tiny.yaml").read_text())
    raw["train"] |= {"steps": args.steps, "log_every": args.steps}
    profile_path = work / "tiny-bench.yaml"
    profile_path.write_text(yaml.safe_dump(raw))
    profile = load_profile(str(profile_path))
    rollouts = synthetic_rollouts(128, profile.rollouts.k)
    base = random_base(work / "base", profile, rollouts)
    rollouts_path = atomic_write_jsonl(work / "rollouts.jsonl", rollouts)
    init = work / "lora_init"
    make_lora_init(profile, base, init, seed=profile.lora.init_seed)
    common = (profile_path, base, rollouts_path, init)
    w = args.workers
    rows = [
        timed("sequential-1-thread", args.runs, 1, 1, work, common),
        timed(f"sequential-{w}-threads", args.runs, 1, w, work, common),
        timed(f"concurrent-{w}x1-thread", args.runs, w, 1, work, common),
    ]
    print(f"{args.runs} SFT runs x {args.steps} steps, tiny shapes, {os.cpu_count()} cores")
    for row in rows:
        print(f"{row['setting']:28s} wall {row['wall_s']:7.1f} s   CPU {row['cpu_s']:7.1f} s")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
