"""The levers of tiny pretraining, one at a time: ms per step (wall and CPU) of the `tiny` model.

    python benchmarks/bench_pretrain.py [--steps 20] [--levers padded,grouped,...] [--batch 32]

Each lever runs --steps optimizer steps of `helpers.tiny_model.pretrain` (after two
warm-up steps) in a fresh process, so thread and precision settings never leak from one
to the next; levers run back to back in the order given. Levers:

- padded: random batches padded to their longest row (the old batching);
- grouped: batches grouped by length (`length_grouped_batches`, what pretrain does);
- threads1 / threads2: grouped, with 1 or 2 intra-op threads (default: torch's);
- medium: grouped, `torch.set_float32_matmul_precision("medium")`: fp32 matrix products
  go to oneDNN (its AVX-512 kernels; MKL takes its AVX2 path on AMD CPUs), but so does
  the CPU flash-attention kernel, which gets slower;
- oneDNN: grouped, the same for matrix products only, with eager attention (whose batched
  products then go to oneDNN as well);
- bf16: grouped, matrix products in bfloat16 under torch.autocast (weights stay fp32).

Prints tokens, padded positions, and ms per step; the speedups are against `padded`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEVERS = ("padded", "grouped", "threads1", "threads2", "medium", "oneDNN", "bf16")


def one(lever: str, steps: int, batch: int, threads: int) -> dict:
    """Time one lever in this process (called in a child process)."""
    import contextlib

    import torch

    if threads:
        torch.set_num_threads(threads)
    from helpers import tiny_model
    from helpers.problems import generate_problems, problem_corpus
    from helpers.profiles import load_profile

    if lever == "threads1":
        torch.set_num_threads(1)
    if lever == "threads2":
        torch.set_num_threads(2)
    if lever == "medium":
        torch.set_float32_matmul_precision("medium")
    if lever == "oneDNN":
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    if lever == "padded":

        def plain(lengths, batch_size, n, gen, pool=16):
            return [torch.randint(len(lengths), (batch_size,), generator=gen).tolist() for _ in range(n)]

        tiny_model.length_grouped_batches = plain
    cfg = load_profile("tiny").model
    texts = problem_corpus(generate_problems(4000, seed=1235, max_result=99))
    tok = tiny_model.train_tokenizer(texts, cfg.vocab_size)
    model = tiny_model.build_model(cfg, len(tok), seed=0)
    if lever == "oneDNN":
        model.set_attn_implementation("eager")
    scope = torch.autocast("cpu", dtype=torch.bfloat16) if lever == "bf16" else contextlib.nullcontext()
    with scope:
        tiny_model.pretrain(model, tok, texts, 2, batch, 3e-3, cfg.max_length, seed=1)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        start = time.perf_counter()
        log = tiny_model.pretrain(model, tok, texts, steps, batch, 3e-3, cfg.max_length, seed=0)
        wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "lever": lever,
        "threads": torch.get_num_threads(),
        "tokens": log.tokens,
        "positions": log.positions,
        "ms_per_step_wall": round(1000 * wall / steps, 1),
        "ms_per_step_cpu": round(1000 * (usage.ru_utime + usage.ru_stime - cpu) / steps, 1),
        "loss": round(log.loss[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads of every lever (0: torch's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.steps, args.batch, args.threads)))
        return
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(ROOT))
    rows = []
    for lever in args.levers.split(","):
        if lever not in LEVERS:
            raise SystemExit(f"unknown lever {lever!r}; choose from {', '.join(LEVERS)}")
        cmd = [
            sys.executable,
            __file__,
            "--child",
            lever,
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
        ]
        cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = next((r for r in rows if r["lever"] == "padded"), rows[0])
    print(f"tiny pretraining, batch {args.batch}, {args.steps} steps per lever, {os.cpu_count()} cores")
    print(
        f"{'lever':10s} {'threads':>7s} {'pad share':>9s} {'wall ms/step':>12s} {'CPU ms/step':>11s} {'speedup':>7s}"
    )
    for r in rows:
        pad = 1 - r["tokens"] / r["positions"]
        speed = base["ms_per_step_wall"] / r["ms_per_step_wall"]
        print(
            f"{r['lever']:10s} {r['threads']:7d} {pad:9.1%} {r['ms_per_step_wall']:12.1f} "
            f"{r['ms_per_step_cpu']:11.1f} {speed:6.2f}x"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
