"""Rollouts: K sampled completions per prompt from the teacher, graded against the reference.

One record per completion: prompt_id, question, reference, prompt, completion, reward
(1.0 right / 0.0 wrong), correct, and the sampling log-probability under the teacher
(None where the teacher is not a model we ran). Stored as jsonl, which `datasets` reads.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .progress import tqdm
from .prompting import build_completion, build_prompt

REQUIRED_FIELDS = ("prompt_id", "prompt", "completion", "reward")


class RolloutError(ValueError):
    """A rollouts file or teacher specification that cannot be used."""


def _next_token(
    logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row and its log-probability under the distribution it was drawn from.

    temperature 0 is greedy, scored by the untempered model; otherwise the logits are divided
    by the temperature and cut to the top-p nucleus (the most likely token always stays),
    which is what HF's TemperatureLogitsWarper and TopPLogitsWarper do.
    """
    logits = logits.float()
    if temperature <= 0:
        token = logits.argmax(-1)
        return token, logits.log_softmax(-1).gather(-1, token[:, None])[:, 0]
    scores = logits / temperature
    if top_p < 1.0:
        ordered, order = scores.sort(-1, descending=True)
        outside = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1) >= top_p  # mass before a token
        scores = scores.scatter(-1, order, ordered.masked_fill(outside, float("-inf")))
    logps = scores.log_softmax(-1)
    token = torch.multinomial(logps.exp(), 1, generator=gen)[:, 0]
    return token, logps.gather(-1, token[:, None])[:, 0]


def _cache_argument(model: Any) -> str:
    """The keyword a model's forward takes its KV cache by."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def _sample_batch(
    model: Any,
    enc: dict[str, torch.Tensor],
    eos: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    gen: torch.Generator,
) -> tuple[list[list[int]], list[float]]:
    """KV-cached decoding of one left-padded batch; a row leaves the batch when it writes EOS.

    Rows that finished are dropped from the batch and from the cache, so the batch costs
    what its rows write, not max(len) x rows as with HF generate. Returns each row's new
    ids (EOS included when written) and the sum of their log-probabilities.
    """
    from transformers import DynamicCache

    mask = enc["attention_mask"]
    rows = mask.shape[0]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # transformers 5 names the cache argument `cache`; 4.x `past_key_values`.
    cache = {_cache_argument(model): DynamicCache()}
    out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions, **cache)
    position = positions[:, -1]
    alive = torch.arange(rows)
    new: list[list[int]] = [[] for _ in range(rows)]
    logp = torch.zeros(rows, dtype=torch.float64)
    logits = out.logits[:, -1]
    for step in range(max_new_tokens):
        token, token_logp = _next_token(logits, temperature, top_p, gen)
        for row, t in zip(alive.tolist(), token.tolist(), strict=True):
            new[row].append(t)
        logp[alive] += token_logp.double().cpu()
        keep = token != eos
        if step == max_new_tokens - 1 or not keep.any():
            break
        if not keep.all():
            alive, token, position, mask = alive[keep.cpu()], token[keep], position[keep], mask[keep]
            next(iter(cache.values())).batch_select_indices(keep.nonzero()[:, 0])
        position = position + 1
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None], **cache)
        logits = out.logits[:, -1]
    return new, logp.tolist()


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
    """K samples per prompt, KV-cached; returns (completion, sampling logp) in prompt-major order.

    temperature 0 means greedy decoding (the logp is then that of the untempered model),
    else the logp is that of the tempered (and top-p cut) distribution the token was drawn
    from. With `return_ids`, each tuple also holds the sampled token ids up to and
    including EOS. Each batch draws from a generator seeded by `seed` and the batch's
    index, so the samples do not depend on what ran before.
    """
    device = next(model.parameters()).device
    flat = [p for p in prompts for _ in range(k)]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # every row continues from the right edge
    out: list[tuple] = []
    model.eval()
    bar = tqdm(total=len(flat), desc=desc, leave=False, unit="rollout")
    try:
        for start in range(0, len(flat), batch_size):
            chunk = flat[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = torch.Generator(device=device).manual_seed(seed * 100_003 + start)
            ids, logps = _sample_batch(
                model, enc, tokenizer.eos_token_id, temperature, top_p, max_new_tokens, gen
            )
            texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
            for text, logp, row in zip(texts, logps, ids, strict=True):
                out.append((text, logp, row) if return_ids else (text, logp))
            bar.update(len(chunk))
    finally:
        bar.close()
        tokenizer.padding_side = side
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
            if isinstance(record["reward"], bool):  # float(true) would pass as 1.0
                raise TypeError
            record["reward"] = float(record["reward"])
        except (TypeError, ValueError):
            raise RolloutError(
                f"{path}:{lineno}: field `reward` is not a number: {record['reward']!r}"
            ) from None
        if not math.isfinite(record["reward"]):
            raise RolloutError(f"{path}:{lineno}: field `reward` is not finite: {record['reward']!r}")
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
