"""Method datasets from graded rollouts: rows kept, reward and advantage columns, DPO pairs, errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from helpers.method_data import MethodDataError, build_method_dataset, rollout_summary
from helpers.profiles import TrainConfig
from tests.builders import make_rollouts


def group(rewards: list[float], pid: int = 0) -> list[dict]:
    return [
        {"prompt_id": pid, "prompt": f"Q{pid}", "completion": f"c{pid}.{j}", "reward": r}
        for j, r in enumerate(rewards)
    ]


def test_sft_and_dft_keep_every_rollout() -> None:
    rollouts = make_rollouts(6, 4)
    for method in ("sft", "dft"):
        ds = build_method_dataset(rollouts, method)
        assert len(ds) == 24
        assert {"prompt", "completion", "prompt_id", "reward"} <= set(ds.column_names)


def test_rft_keeps_correct_rollouts_only() -> None:
    ds = build_method_dataset(group([1, 0, 1, 0]) + group([0, 0], pid=1), "rft")
    assert ds["completion"] == ["c0.0", "c0.2"]
    with pytest.raises(MethodDataError, match="no correct rollout"):
        build_method_dataset(group([0, 0, 0]), "rft")


def test_rift_maps_binary_rewards_to_signed_rewards() -> None:
    train = dataclasses.replace(TrainConfig(), rift_pos_reward=2.0, rift_neg_reward=-0.5)
    assert build_method_dataset(group([1, 0]), "rift", train)["reward"] == [2.0, -0.5]
    assert build_method_dataset(group([1, 0]), "rift")["reward"] == [1.0, -0.2]
    assert build_method_dataset(group([1, 0]), "rift_paper")["reward"] == [1.0, 0.0]


def test_grpo_paper_advantage_by_hand() -> None:
    ds = build_method_dataset(group([1, 0, 0, 0]) + group([1, 1], pid=1), "grpo_paper")
    # group 0: mean 0.25 -> 0.75 + 0.1, -0.25 + 0.1; group 1: mean 1 -> 0 + 0.1
    assert ds["advantage"] == pytest.approx([0.85, -0.15, -0.15, -0.15, 0.1, 0.1])


def test_grpo_published_advantage_by_hand() -> None:
    rows = group([1, 0, 0, 0]) + group([1, 1], pid=1) + group([0, 0], pid=2)
    ds = build_method_dataset(rows, "grpo")
    # mixed group: r - mean; all-correct group: the bias 0.1; all-wrong group: 0
    assert ds["advantage"] == pytest.approx([0.75, -0.25, -0.25, -0.25, 0.1, 0.1, 0.0, 0.0])


def test_grpo_needs_a_mixed_group() -> None:
    for method in ("grpo", "grpo_paper"):
        with pytest.raises(MethodDataError, match="single reward"):
            build_method_dataset(group([1, 1]) + group([0, 0], pid=1), method)


def unique_rollouts(n_prompts: int, k: int) -> list[dict]:
    """make_rollouts, each completion made unique so a pair names its two rollouts."""
    return [dict(r, completion=f"{r['completion']} [{i}]") for i, r in enumerate(make_rollouts(n_prompts, k))]


def check_pairs(ds, rollouts) -> None:
    """Every pair is (correct, incorrect) of one prompt, and no pair occurs twice."""
    by_completion = {r["completion"]: r for r in rollouts}
    for row in ds:
        chosen, rejected = by_completion[row["chosen"]], by_completion[row["rejected"]]
        assert chosen["reward"] > 0 and rejected["reward"] <= 0
        assert chosen["prompt_id"] == rejected["prompt_id"] == row["prompt_id"]
        assert row["prompt"] == chosen["prompt"]
    pairs = list(zip(ds["chosen"], ds["rejected"], strict=True))
    assert len(set(pairs)) == len(pairs)


def dpo_config(per_prompt: int, max_pairs: int = 0) -> TrainConfig:
    return dataclasses.replace(TrainConfig(), dpo_pairs_per_prompt=per_prompt, dpo_max_pairs=max_pairs)


def test_dpo_draws_pairs_per_prompt_group() -> None:
    # groups with 0, 1, 2, 3, 4, 0 correct: 3 mixed ones, with 3, 4 and 3 (correct, incorrect) combinations
    rollouts = unique_rollouts(6, 4)
    ds = build_method_dataset(rollouts, "dpo", dpo_config(1), seed=1)
    assert sorted(ds["prompt_id"]) == [1, 2, 3]  # one pair from each mixed group
    check_pairs(ds, rollouts)
    two = build_method_dataset(rollouts, "dpo", dpo_config(2), seed=1)
    assert sorted(two["prompt_id"]) == [1, 1, 2, 2, 3, 3]
    check_pairs(two, rollouts)
    every = build_method_dataset(rollouts, "dpo", dpo_config(10), seed=1)  # more than any group has: all
    assert len(every) == 1 * 3 + 2 * 2 + 3 * 1
    check_pairs(every, rollouts)
    assert build_method_dataset(rollouts, "dpo", seed=1)["prompt_id"] == ds["prompt_id"]  # default: one


def test_dpo_pairs_are_seeded_and_deterministic() -> None:
    rollouts = unique_rollouts(40, 4)
    first = build_method_dataset(rollouts, "dpo", dpo_config(1), seed=1)
    again = build_method_dataset(rollouts, "dpo", dpo_config(1), seed=1)
    assert first.to_list() == again.to_list()
    chosen = {seed: build_method_dataset(rollouts, "dpo", dpo_config(1), seed=seed) for seed in range(2, 6)}
    pairs = {s: set(zip(ds["chosen"], ds["rejected"], strict=True)) for s, ds in chosen.items()}
    assert len({frozenset(p) for p in pairs.values()}) > 1  # another seed draws other pairs


def test_dpo_max_pairs_caps_the_pairs() -> None:
    rollouts = unique_rollouts(40, 4)  # 24 mixed groups
    uncapped = build_method_dataset(rollouts, "dpo", dpo_config(1), seed=3)
    capped = build_method_dataset(rollouts, "dpo", dpo_config(1, max_pairs=5), seed=3)
    assert len(uncapped) == 24 and len(capped) == 5
    assert len(set(capped["prompt_id"])) == 5
    check_pairs(capped, rollouts)
    assert len(build_method_dataset(rollouts, "dpo", dpo_config(1, max_pairs=100), seed=3)) == 24
    with pytest.raises(MethodDataError, match="max_pairs"):
        build_method_dataset(rollouts, "dpo", dpo_config(1, max_pairs=-1))
    with pytest.raises(MethodDataError, match="pairs per prompt"):
        build_method_dataset(rollouts, "dpo", dpo_config(0))


def test_dpo_without_pairs_fails() -> None:
    with pytest.raises(MethodDataError, match="no \\(correct, incorrect\\) pair"):
        build_method_dataset(group([1, 1]) + group([0, 0], pid=1), "dpo")


def test_unknown_method_and_bad_records(tmp_path) -> None:
    with pytest.raises(MethodDataError, match="unknown method 'ppo'"):
        build_method_dataset(group([1, 0]), "ppo")
    rows = group([1, 0])
    del rows[1]["reward"]
    with pytest.raises(MethodDataError, match="record 1 .* has no `reward`"):
        build_method_dataset(rows, "sft")
    path = tmp_path / "rollouts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(MethodDataError, match=r"rollouts.jsonl:2: missing field\(s\) reward"):
        build_method_dataset(path, "sft")
    with pytest.raises(MethodDataError, match="does not exist"):
        build_method_dataset(tmp_path / "missing.jsonl", "sft")
    assert issubclass(MethodDataError, ValueError)


def test_reads_jsonl_with_datasets(tmp_path) -> None:
    path = tmp_path / "rollouts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in make_rollouts(3, 2)) + "\n")
    assert len(build_method_dataset(path, "sft")) == 6


def test_rollout_summary_by_hand() -> None:
    summary = rollout_summary(make_rollouts(6, 4))  # correct per group: 0, 1, 2, 3, 4, 0
    assert summary["n_rollouts"] == 24 and summary["n_prompts"] == 6
    assert summary["reward_mean"] == pytest.approx(10 / 24)
    assert summary["correct_per_group"] == {"0": 2, "1": 1, "2": 1, "3": 1, "4": 1}
    assert summary["mixed_share"] == pytest.approx(3 / 6)
    assert summary["all_correct_share"] == pytest.approx(1 / 6)
    assert summary["dpo_pairs"] == 10
