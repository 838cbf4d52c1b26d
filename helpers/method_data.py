"""From graded rollouts to one `datasets.Dataset` per method, checked before any training starts.

Every method reads the same rollouts; they differ only in which rows they keep and
which per-rollout column their loss reads:
- sft, dft: all rollouts; rft: the correct ones (reward > 0);
- rift: all, `reward` mapped to the published signed rewards (+1 / -0.2 by default);
  rift_paper: all, binary `reward` as stored;
- grpo, grpo_paper: all, with an `advantage` column computed from the stored group
  (rollouts sharing a prompt_id);
- dpo: `train.dpo_pairs_per_prompt` (correct, incorrect) pairs drawn from each prompt group by
  seed, at most `train.dpo_max_pairs` in all, shuffled by seed; ipo, dpo_norm and simpo read
  the same pairs; kto: every rollout, with a mismatched completion (kto_rows).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset

from helpers.losses import BLOCKS
from helpers.profiles import CONTRASTIVE, METHODS, VARIANTS, TrainConfig

REQUIRED = ("prompt_id", "prompt", "completion", "reward")
METHOD_NAMES = METHODS + VARIANTS + CONTRASTIVE


class MethodDataError(ValueError):
    """Rollouts that cannot feed a method (unknown method, nothing to train on, a bad record)."""


def load_rollouts(source: str | Path | Sequence[dict] | Dataset) -> list[dict]:
    """Rollout records from a jsonl file (read with `datasets`), a Dataset or a list, checked field by field."""
    where = "rollouts"
    if isinstance(source, str | Path):
        from helpers.rollouts import RolloutError, read_rollouts

        where = str(source)
        try:
            records = read_rollouts(source)  # names the file, line and field of a bad record
        except RolloutError as err:
            raise MethodDataError(str(err)) from None
    elif isinstance(source, Dataset):
        records = source.to_list()
    else:
        records = [dict(r) for r in source]
    if not records:
        raise MethodDataError(f"{where}: no rollouts")
    for i, rec in enumerate(records):
        for key in REQUIRED:
            if rec.get(key) is None:
                raise MethodDataError(
                    f"{where}: record {i} (prompt_id={rec.get('prompt_id')}) has no `{key}`"
                )
        reward = rec["reward"]
        if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
            raise MethodDataError(f"{where}: record {i} has a bad `reward` {reward!r} (need a finite number)")
        rec["reward"] = float(reward)
    return records


def _groups(records: list[dict]) -> dict[Any, list[int]]:
    """Row indices of each prompt_id, in first-seen order."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        groups[rec["prompt_id"]].append(i)
    return groups


def group_advantages(records: list[dict], method: str, bias: float) -> list[float]:
    """Advantage of every rollout from its group's rewards.

    grpo_paper (the study): `A = r - mean_group + bias` for every rollout.
    grpo (KRAFTON's Offline-GRPO, as NeMo RL documents it): `A = r - mean_group`
    without std normalisation; a group whose every reward is positive gets `A = bias`
    (so solved prompts still teach), an all-wrong group gets 0 (it contributes nothing).
    """
    advantages = [0.0] * len(records)
    for rows in _groups(records).values():
        rewards = [records[i]["reward"] for i in rows]
        mean = sum(rewards) / len(rewards)
        all_positive = all(r > 0 for r in rewards)
        for i, r in zip(rows, rewards, strict=True):
            if method == "grpo_paper":
                advantages[i] = r - mean + bias
            elif all_positive:
                advantages[i] = bias
            else:
                advantages[i] = r - mean
    return advantages


def dpo_pairs(
    records: list[dict], seed: int, per_prompt: int | None = None, max_pairs: int = 0
) -> list[dict]:
    """(correct, incorrect) completion pairs within each prompt group, shuffled by `seed`.

    `per_prompt` pairs are drawn without replacement from each mixed group's
    correct x incorrect combinations (None: all of them), then `max_pairs` (0: no cap)
    keeps the first pairs of the seeded shuffle. The study trained DPO on about 1.8k
    pairs, one per mixed group, seen about 18 times, not on every combination.
    """
    if per_prompt is not None and per_prompt < 1:
        raise MethodDataError(f"dpo: pairs per prompt must be at least 1, got {per_prompt}")
    if max_pairs < 0:
        raise MethodDataError(f"dpo: max_pairs must be 0 (no cap) or positive, got {max_pairs}")
    rng = random.Random(seed)
    pairs = []
    for pid, rows in _groups(records).items():
        good = [records[i] for i in rows if records[i]["reward"] > 0]
        bad = [records[i] for i in rows if records[i]["reward"] <= 0]
        combos = [(g, b) for g in good for b in bad]
        if per_prompt is not None and len(combos) > per_prompt:
            combos = rng.sample(combos, per_prompt)
        for g, b in combos:
            pairs.append(
                {
                    "prompt_id": pid,
                    "prompt": g["prompt"],
                    "chosen": g["completion"],
                    "rejected": b["completion"],
                }
            )
    rng.shuffle(pairs)
    return pairs[:max_pairs] if max_pairs else pairs


def kto_rows(records: list[dict], seed: int) -> list[dict]:
    """Every rollout (desirable when reward > 0) with a mismatched completion for KTO's KL baseline.

    Groups are shuffled by `seed` and laid end to end; each row takes the completion m rows
    further on (m = the largest group), which always belongs to another prompt. The
    mismatched completions are a permutation of the matched ones, as TRL asks of its KL set.
    """
    groups = list(_groups(records).values())
    random.Random(seed).shuffle(groups)
    order = [i for g in groups for i in g]
    m = max(len(g) for g in groups)
    if len(order) < 2 * m:
        raise MethodDataError(
            f"kto: one prompt holds {m} of {len(order)} rollouts; a mismatched completion from another prompt "
            "for every rollout needs each prompt to hold at most half of them"
        )
    return [
        {
            "prompt_id": records[i]["prompt_id"],
            "prompt": records[i]["prompt"],
            "completion": records[i]["completion"],
            "kl_completion": records[order[(j + m) % len(order)]]["completion"],
            "reward": records[i]["reward"],
            "correct": records[i]["reward"] > 0,
        }
        for j, i in enumerate(order)
    ]


def build_method_dataset(
    rollouts: str | Path | Sequence[dict] | Dataset,
    method: str,
    train: TrainConfig | None = None,
    seed: int = 42,
) -> Dataset:
    """The training rows of `method` (see the module docstring); raises MethodDataError before training."""
    if method not in METHOD_NAMES:
        raise MethodDataError(f"unknown method {method!r}; expected one of {', '.join(METHOD_NAMES)}")
    train = train or TrainConfig()
    records = load_rollouts(rollouts)
    if method == "kto":
        return Dataset.from_list(kto_rows(records, seed))
    if method in BLOCKS:  # dpo and the paired contrastive losses
        pairs = dpo_pairs(records, seed, train.dpo_pairs_per_prompt, train.dpo_max_pairs)
        if not pairs:
            raise MethodDataError(
                f"{method}: no (correct, incorrect) pair within any prompt group; it needs groups with mixed rewards"
            )
        return Dataset.from_list(pairs)

    rows = [
        {
            "prompt_id": r["prompt_id"],
            "prompt": r["prompt"],
            "completion": r["completion"],
            "reward": r["reward"],
            "correct": r["reward"] > 0,
        }
        for r in records
    ]
    if method == "rft":
        rows = [r for r in rows if r["correct"]]
        if not rows:
            raise MethodDataError("rft: no correct rollout (reward > 0) to train on")
    elif method == "rift":
        for r in rows:
            r["reward"] = train.rift_pos_reward if r["correct"] else train.rift_neg_reward
    elif method in ("grpo", "grpo_paper"):
        if not any(len({records[i]["reward"] for i in g}) > 1 for g in _groups(records).values()):
            raise MethodDataError(
                f"{method}: every prompt group has a single reward value, so there is no group-relative signal"
            )
        for r, a in zip(rows, group_advantages(records, method, train.grpo_bonus), strict=True):
            r["advantage"] = a
    return Dataset.from_list(rows)


def rollout_summary(rollouts: str | Path | Sequence[dict] | Dataset) -> dict[str, Any]:
    """Reward mean, how many rollouts per group are correct, the share of mixed groups, DPO pairs."""
    from helpers.rollouts import summarize

    return summarize(load_rollouts(rollouts))
