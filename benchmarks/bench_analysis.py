"""Time (and optionally save the numbers of) the heavy part of chapter 04 or chapter 06 on cached runs.

    WSG_RUNS=/tmp/copy-of-runs python benchmarks/bench_analysis.py 04 [--profile tiny] [--replicates 1]
        [--threads 1] [--workers 1] [--save out.json]

Chapter 04: `compare.connectivity_reports` exactly as the notebook calls it. Chapter 06:
`evaluate.evaluate_adapters` (the base and every run of each replicate) called directly, so the
cached evaluation stages are neither read nor written. Every trained run must already be cached
(nothing is trained here). Prints wall and CPU seconds (getrusage of this process): the machine is
shared, so CPU seconds are the figure to compare between two versions of the code; `--save` writes
the numbers, to check that a speed lever left them unchanged (`--compare a.json b.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path


def _threads(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
    return "1"


for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _threads(sys.argv)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
PAIRS = (
    "grpo-rift,sft-grpo,rift-dpo,grpo_paper-rift_paper,sft-grpo_paper,rift_paper-dpo,"
    "sft-rft,sft-dft,sft-dpo,sft-sft_order,sft-sft_seed"
)


def cpu_seconds() -> float:
    """This process and its finished children (the worker processes of --workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def chapter_04(profile, runs, workers: int) -> list:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.compare import connectivity_reports
    from helpers.evaluate import load_eval_set
    from helpers.pipeline import student_dir

    tokenizer = AutoTokenizer.from_pretrained(student_dir(profile))
    model = AutoModelForCausalLM.from_pretrained(student_dir(profile)).eval()
    a = profile.analysis
    problems = load_eval_set(profile)[: a.lmc_problems]
    sizes = (a.lmc_points, a.eval_batch_size, profile.model.max_length)
    return connectivity_reports(model, tokenizer, runs, PAIRS.split(","), problems, *sizes, workers=workers)


def chapter_06(profile, runs, workers: int) -> list:
    from helpers.eval_stages import evaluation_stages
    from helpers.evaluate import evaluate_adapters, load_eval_set
    from helpers.pipeline import resolve_device, student_dir

    if workers > 1:  # the book's path: builds (and then reuses) the evaluation stages under WSG_RUNS
        return evaluation_stages(profile, workers=workers)[: len(runs)]
    a = profile.analysis
    problems = load_eval_set(profile)
    return [
        evaluate_adapters(
            student_dir(profile),
            {"base": None, **replicate},
            problems,
            a.eval_max_new_tokens,
            a.eval_batch_size,
            device=resolve_device(profile),
            progress=False,
        )
        for replicate in runs
    ]


def cached_runs(profile, replicates: int) -> list[dict[str, Path]]:
    """Each replicate's cached adapter folders; an error when one is not trained yet."""
    from helpers.pipeline import adapter_done, adapter_stage
    from helpers.replicates import replicate_ids, replicate_profile, replicate_run_names

    out = []
    for j in replicate_ids(profile)[:replicates]:
        own = replicate_profile(profile, j)
        names = replicate_run_names(profile, j)
        missing = [n for n in names if not adapter_done(own, n)]
        if missing:
            raise SystemExit(f"replicate {j}: runs {missing} are not cached under WSG_RUNS; train them first")
        out.append({n: adapter_stage(own, n) for n in names})
    return out


def compare(a_path: str, b_path: str) -> int:
    """Largest absolute difference between two saved result trees (0.0 means bit-identical)."""

    def leaves(x, key=""):
        if isinstance(x, dict):
            for k, v in x.items():
                yield from leaves(v, f"{key}/{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                yield from leaves(v, f"{key}[{i}]")
        else:
            yield key, x

    a = dict(leaves(json.loads(Path(a_path).read_text())))
    b = dict(leaves(json.loads(Path(b_path).read_text())))
    if set(a) != set(b):
        print(f"different keys: {sorted(set(a) ^ set(b))[:10]}")
        return 1
    numeric = [k for k in a if isinstance(a[k], float) and isinstance(b[k], float)]
    worst = max((abs(a[k] - b[k]), k) for k in numeric) if numeric else (0.0, "")
    other = [k for k in a if k not in numeric and a[k] != b[k]]
    print(
        f"{len(a)} leaves, largest float difference {worst[0]:.3g} at {worst[1]}, {len(other)} other differ"
    )
    return int(bool(other) or worst[0] != 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapter", nargs="?", choices=("04", "06"))
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--replicates", type=int, default=99)
    parser.add_argument("--threads", default="1")
    parser.add_argument("--workers", type=int, default=1, help="processes (chapter 06: >1 builds stages)")
    parser.add_argument("--save", help="write the chapter's numbers to this json file")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two --save files")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.chapter is None:
        parser.error("give a chapter (04 or 06) or --compare")
    import torch

    from helpers.profiles import load_profile

    torch.set_num_threads(int(args.threads))
    profile = load_profile(args.profile)
    runs = cached_runs(profile, args.replicates)
    wall, cpu = time.perf_counter(), cpu_seconds()
    out = (chapter_04 if args.chapter == "04" else chapter_06)(profile, runs, args.workers)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(
        f"chapter {args.chapter} ({len(runs)} replicates, {args.workers} workers): wall {wall:.1f} s, CPU {cpu:.1f} s"
    )
    if args.save:
        Path(args.save).write_text(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
