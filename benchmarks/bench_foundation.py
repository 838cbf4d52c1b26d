"""Foundation benchmark: pretraining time and tokens/s, and rollout samples/s, on a profile (tiny).

    python benchmarks/bench_foundation.py [--profile tiny] [--prompts 64]

Pretrains the profile's tiny models from scratch in a temporary run folder (nothing
cached is reused), then times K-sample teacher rollouts on held-out prompts. Prints
what it measured; nothing is compared against stored numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--prompts", type=int, default=64, help="prompts for the rollout timing")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ["WSG_RUNS"] = tempfile.mkdtemp(prefix="wsg-bench-")
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.cache import read_json
    from helpers.pipeline import base_stage, configure_environment, problems_stage, read_jsonl, teacher_ref
    from helpers.profiles import load_profile
    from helpers.rollouts import prompts_for, sample_rollouts

    profile = load_profile(args.profile)
    configure_environment(profile)
    start = time.perf_counter()
    base = base_stage(profile)
    stage_seconds = time.perf_counter() - start
    logs = read_json(base / "pretrain_log.json")

    r = profile.rollouts
    teacher = teacher_ref(profile)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    problems = read_jsonl(problems_stage(profile) / "train.jsonl")[: args.prompts]
    prompts = prompts_for(problems, tokenizer)
    start = time.perf_counter()
    samples = sample_rollouts(model, tokenizer, prompts, r, seed=0, return_ids=True)
    rollout_seconds = time.perf_counter() - start
    new_tokens = sum(len(ids) for _, _, ids in samples)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {args.threads} thread(s), profile {profile.name}"
    )
    for name, log in logs.items():
        print(
            f"pretraining {name}: {log['parameters']:,} params, {log['steps'][-1] if log['steps'] else 0} steps, "
            f"{log['seconds']:.1f} s, {log['tokens_per_second']:,.0f} tokens/s"
        )
    print(f"base stage in total (pretraining + accuracy probes + saving): {stage_seconds:.1f} s")
    print(
        f"rollouts: {len(samples)} samples ({len(prompts)} prompts x K={r.k}) in {rollout_seconds:.1f} s = "
        f"{len(samples) / rollout_seconds:.1f} samples/s, {new_tokens / rollout_seconds:,.0f} new tokens/s"
    )


if __name__ == "__main__":
    main()
