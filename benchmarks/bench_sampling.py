"""Rollout sampling, lever by lever: HF generate against our KV-cached sampler, batch sizes, oneDNN.

    python benchmarks/bench_sampling.py --model DIR [--prompts 128] [--k 4] [--threads 1]

DIR is a saved tiny teacher (e.g. `<runs>/tiny/base-*/teacher`). Every lever samples the
same prompts x K at the `tiny` profile's temperature and length, back to back in this
process; wall and CPU seconds, new tokens, and the decode positions computed (rows x
steps: HF generate runs every row of a batch until its longest row ends).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from contextlib import nullcontext

import torch


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def hf_generate(model, tokenizer, prompts, k, temperature, max_new_tokens, batch_size, seed):
    """What helpers.rollouts did before: HF generate, sampling, left padding; (text, new ids, rows x steps)."""
    flat = [p for p in prompts for _ in range(k)]
    tokenizer.padding_side = "left"
    out, positions = [], 0
    for start in range(0, len(flat), batch_size):
        enc = tokenizer(flat[start : start + batch_size], return_tensors="pt", padding=True)
        torch.manual_seed(seed * 100_003 + start)
        gen = model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        positions += new.numel()
        for row in new.tolist():
            ids = row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row
            out.append(ids)
    tokenizer.padding_side = "right"
    return out, positions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.problems import generate_problems
    from helpers.profiles import load_profile
    from helpers.rollouts import prompts_for, sample_completions
    from helpers.tiny_model import fast_cpu_matmul

    r = load_profile("tiny").rollouts
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    prompts = prompts_for(generate_problems(args.prompts, seed=99, max_result=99), tokenizer)
    rows = []
    levers = [
        ("HF generate, batch 64", "hf", 64, False),
        ("ours, batch 64", "ours", 64, False),
        ("ours, batch 64, oneDNN", "ours", 64, True),
        ("ours, batch 256, oneDNN", "ours", 256, True),
        ("ours, batch 16, oneDNN", "ours", 16, True),
    ]
    for label, kind, batch, fast in levers:
        c, t = cpu(), time.perf_counter()
        with fast_cpu_matmul(model) if fast else nullcontext(), torch.no_grad():
            if kind == "hf":
                ids, positions = hf_generate(
                    model, tokenizer, prompts, args.k, r.temperature, r.max_new_tokens, batch, 0
                )
            else:
                samples = sample_completions(
                    model, tokenizer, prompts, args.k, r.temperature, r.top_p, r.max_new_tokens, batch, 0,
                    return_ids=True,
                )  # fmt: skip
                ids = [s[2] for s in samples]
                positions = sum(map(len, ids))
        rows.append(
            {
                "lever": label,
                "wall_s": round(time.perf_counter() - t, 2),
                "cpu_s": round(cpu() - c, 2),
                "new_tokens": sum(map(len, ids)),
                "decode_positions": positions,
            }
        )
    n = len(prompts) * args.k
    print(
        f"{n} samples (K={args.k}), max {r.max_new_tokens} new tokens, {args.threads} thread(s), {os.cpu_count()} cores"
    )
    for row in rows:
        print(
            f"{row['lever']:26s} wall {row['wall_s']:6.1f} s  CPU {row['cpu_s']:6.1f} s  "
            f"{n / row['wall_s']:6.1f} samples/s  positions {row['decode_positions']:7d} "
            f"(new tokens {row['new_tokens']})"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
