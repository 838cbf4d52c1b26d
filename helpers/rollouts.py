"""Rollouts: K sampled completions per prompt from the teacher, graded against the reference.

One record per completion: prompt_id, question, reference, prompt, completion, reward
(1.0 right / 0.0 wrong), correct, and the sampling log-probability under the teacher
(None where the teacher is not a model we ran). Stored as jsonl, which `datasets` reads.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .prompting import build_completion, build_prompt

REQUIRED_FIELDS = ("prompt_id", "prompt", "completion", "reward")


class RolloutError(ValueError):
    """A rollouts file or teacher specification that cannot be used."""


@torch.no_grad()
def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    desc: str = "rollouts",
    return_ids: bool = False,
) -> list[tuple]:
    """K samples per prompt with HF generate; returns (completion, sampling logp) in prompt-major order.

    temperature 0 means greedy decoding (the logp is then that of the untempered model).
    With `return_ids`, each tuple also holds the sampled token ids up to and including EOS.

    Each batch is seeded from `seed` and its index, so the samples do not depend on
    what ran before. The logp is that of the tempered sampling distribution.
    """
    device = next(model.parameters()).device
    flat = [p for p in prompts for _ in range(k)]
    tokenizer.padding_side = "left"
    out: list[tuple[str, float]] = []
    model.eval()
    for start in tqdm(range(0, len(flat), batch_size), desc=desc, leave=False):
        chunk = flat[start : start + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        torch.manual_seed(seed * 100_003 + start)
        gen = model.generate(
            **enc,
            **(
                {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
                if temperature > 0
                else {"do_sample": False}
            ),
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        new = gen.sequences[:, enc["input_ids"].shape[1] :]
        scores = torch.stack(gen.scores, dim=1).float().log_softmax(-1)  # processed = tempered
        token_logps = scores.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        eos_seen = (new == tokenizer.eos_token_id).cumsum(1)
        alive = (eos_seen == 0) | ((eos_seen == 1) & (new == tokenizer.eos_token_id))
        logps = (token_logps.masked_fill(~alive, 0.0)).sum(1)
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        for row, (text, logp) in enumerate(zip(texts, logps, strict=True)):
            ids = new[row][alive[row]].tolist()
            out.append((text, float(logp), ids) if return_ids else (text, float(logp)))
    tokenizer.padding_side = "right"
    return out


def sample_rollouts(
    model: Any, tokenizer: Any, prompts: Sequence[str], config: Any, seed: int, **kwargs: Any
):
    """sample_completions with a profile's RolloutConfig (K, temperature, top-p, length, batch)."""
    return sample_completions(
        model,
        tokenizer,
        prompts,
        config.k,
        config.temperature,
        config.top_p,
        config.max_new_tokens,
        config.batch_size,
        seed=seed,
        **kwargs,
    )


def _corrupt_answer(solution: str, rng: random.Random) -> str:
    """A wrong worked solution: the final result off by a small nonzero amount."""
    lines = solution.strip().split("\n")
    match = re.match(r"####\s*(-?[\d,.]+)", lines[-1])
    if not match:
        raise RolloutError(f"oracle teacher needs a '#### N' last line, got {lines[-1]!r}")
    value = float(match.group(1).replace(",", ""))
    wrong = value + rng.choice([-3, -2, -1, 1, 2, 3, 10])
    wrong_text = str(int(wrong)) if wrong == int(wrong) else str(wrong)
    right_text = match.group(1)
    if len(lines) > 1:
        lines[-2] = lines[-2][::-1].replace(right_text[::-1], wrong_text[::-1], 1)[::-1]
    lines[-1] = f"#### {wrong_text}"
    return "\n".join(lines)


def oracle_completions(
    problems: Sequence[dict], k: int, error_rate: float, seed: int
) -> list[tuple[str, None]]:
    """The smoke profile's teacher: gold solutions, each wrong with probability `error_rate`.

    Used where a model good enough to be partly right cannot be trained in seconds.
    """
    rng = random.Random(seed)
    out: list[tuple[str, None]] = []
    for problem in problems:
        for _ in range(k):
            text = problem["solution"]
            if rng.random() < error_rate:
                text = _corrupt_answer(text, rng)
            out.append((build_completion(text).strip(), None))
    return out


def grade(
    problems: Sequence[dict], prompts: Sequence[str], samples: Sequence[tuple[str, float | None]], k: int
):
    """Join samples to their problems and grade each with the answer checker."""
    from .data import is_correct

    records = []
    for i, (completion, logp) in enumerate(samples):
        pid = i // k
        problem = problems[pid]
        correct = bool(is_correct(completion, problem["answer"]))
        records.append(
            {
                "prompt_id": pid,
                "problem_id": problem["id"],
                "question": problem["question"],
                "reference": problem["answer"],
                "prompt": prompts[pid],
                "completion": completion.strip(),
                "reward": 1.0 if correct else 0.0,
                "correct": correct,
                "sample_logp": None if logp is None or not math.isfinite(logp) else logp,
            }
        )
    return records


def prompts_for(problems: Sequence[dict], tokenizer: Any) -> list[str]:
    """The prompt text of each problem for this tokenizer."""
    return [build_prompt(p["question"], tokenizer) for p in problems]


def write_rollouts(records: Sequence[dict], path: str | Path) -> Path:
    """Write rollouts as jsonl (atomically)."""
    from .cache import atomic_write_jsonl

    return atomic_write_jsonl(path, list(records))


def read_rollouts(path: str | Path) -> list[dict]:
    """Read and validate a rollouts jsonl; errors name the file, the line and the field."""
    path = Path(path)
    if not path.exists():
        raise RolloutError(f"rollouts file {path} does not exist")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise RolloutError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        missing = [f for f in REQUIRED_FIELDS if f not in record]
        if missing:
            hint = (
                " (rollouts must be graded: add a 0/1 `reward` per completion)" if "reward" in missing else ""
            )
            raise RolloutError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}{hint}")
        try:
            record["reward"] = float(record["reward"])
        except (TypeError, ValueError):
            raise RolloutError(
                f"{path}:{lineno}: field `reward` is not a number: {record['reward']!r}"
            ) from None
        record.setdefault("correct", record["reward"] > 0)
        record.setdefault("sample_logp", None)
        records.append(record)
    if not records:
        raise RolloutError(f"{path}: no rollouts in the file")
    return records


def summarize(records: Sequence[dict]) -> dict[str, Any]:
    """Reward distribution, correct-per-group histogram, mixed groups, DPO pairs, and diversity.

    Diversity counts completions within a prompt's group: `unique_share` is the share of
    rollouts whose text differs from every other rollout of the same prompt counted once
    (distinct texts / rollouts), `identical_groups` the groups whose K texts are all one,
    and `distinct_dpo_pairs` the (right, wrong) pairs of distinct texts (`dpo_pairs`
    counts every right x wrong combination, copies included).
    """
    groups: dict[Any, list[tuple[str, bool]]] = defaultdict(list)
    for r in records:
        groups[r["prompt_id"]].append((str(r["completion"]), float(r["reward"]) > 0))
    right = {pid: [c for c, ok in g if ok] for pid, g in groups.items()}
    wrong = {pid: [c for c, ok in g if not ok] for pid, g in groups.items()}
    n_correct = Counter(len(right[pid]) for pid in groups)
    mixed = sum(1 for pid in groups if right[pid] and wrong[pid])
    distinct = {pid: len({c for c, _ in g}) for pid, g in groups.items()}
    logps = [r["sample_logp"] for r in records if r.get("sample_logp") is not None]
    n = len(records)
    return {
        "n_rollouts": n,
        "n_prompts": len(groups),
        "reward_mean": sum(float(r["reward"]) for r in records) / n,
        "correct_per_group": {str(k): v for k, v in sorted(n_correct.items())},
        "mixed_groups": mixed,
        "mixed_share": mixed / len(groups),
        "all_correct_share": sum(1 for pid in groups if not wrong[pid]) / len(groups),
        "all_wrong_share": sum(1 for pid in groups if not right[pid]) / len(groups),
        "dpo_pairs": sum(len(right[pid]) * len(wrong[pid]) for pid in groups),
        "distinct_dpo_pairs": sum(len(set(right[pid])) * len(set(wrong[pid])) for pid in groups),
        "unique_completions": sum(distinct.values()),
        "unique_share": sum(distinct.values()) / n,
        "identical_groups": sum(1 for pid, g in groups.items() if len(g) > 1 and distinct[pid] == 1),
        "mean_sample_logp": sum(logps) / len(logps) if logps else None,
    }
