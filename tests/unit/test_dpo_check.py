"""helpers.dpo_check: held-out DPO pairs and margins, and the norm AdamW reaches on noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import dpo_check
from helpers.losses import dpo_loss
from tests.builders import make_adapter, save_base

PROBLEMS = [
    {"question": "What is 2 + 3?", "solution": "2 + 3 = 5.\n#### 5", "answer": "5"},
    {"question": "What is 4 + 4?", "solution": "4 + 4 = 8.\n#### 8", "answer": "8"},
    {"question": "What is 9 - 1?", "solution": "9 - 1 = 8.\n#### 8", "answer": "8"},
]
ROWS = [
    {"correct": False, "completion": " 2 + 3 = 6.\n#### 6"},
    {"correct": True, "completion": " 4 + 4 = 8.\n#### 8"},
    {"correct": False, "completion": " 9 - 1 = 7.\n#### 7"},
]


def test_heldout_pairs_keep_only_the_problems_the_base_got_wrong():
    pairs = dpo_check.heldout_pairs(PROBLEMS, ROWS)
    assert [p["rejected"] for p in pairs] == [ROWS[0]["completion"], ROWS[2]["completion"]]
    assert all(p["chosen"].strip() == q["solution"] for p, q in zip(pairs, PROBLEMS[::2], strict=True))
    assert all("What is" in p["prompt"] for p in pairs)
    with pytest.raises(dpo_check.DpoCheckError, match="base_rows"):
        dpo_check.heldout_pairs(PROBLEMS, ROWS[:2])


@pytest.fixture(scope="module")
def base_and_adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo_check")
    base = save_base(root / "base")
    from transformers import AutoModelForCausalLM

    folders = {}
    for name, scale in (("zero", 0.0), ("moved", 0.5)):
        model = make_adapter(AutoModelForCausalLM.from_pretrained(base), seed=3, scale=scale)
        model.save_pretrained(root / name)
        folders[name] = root / name
    return base, folders


def test_reward_margins_match_dpo_loss_and_vanish_for_a_no_op_adapter(base_and_adapters):
    base, folders = base_and_adapters
    pairs = dpo_check.heldout_pairs(PROBLEMS, ROWS)
    zero = dpo_check.reward_margins(base, folders["zero"], pairs, beta=0.1, max_length=64)
    assert np.allclose(zero, 0.0, atol=1e-5)
    moved = dpo_check.reward_margins(base, folders["moved"], pairs, beta=0.1, max_length=64)
    assert np.abs(moved).max() > 1e-3
    # the same number dpo_loss reports as its reward margin, from the four sequence log-probs
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folders["moved"]).eval()
    lps = {}
    for side in ("chosen", "rejected"):
        texts = [(p["prompt"], p[side]) for p in pairs]
        lps[side] = torch.tensor(dpo_check._sequence_logps(model, tok, texts, 64))
        with model.disable_adapter():
            lps["ref_" + side] = torch.tensor(dpo_check._sequence_logps(model, tok, texts, 64))
    _, metrics = dpo_loss(lps["chosen"], lps["rejected"], lps["ref_chosen"], lps["ref_rejected"], 0.1)
    assert moved.mean() == pytest.approx(metrics["rewards_margin"], rel=1e-4, abs=1e-6)


def test_margin_summary_interval_and_share():
    s = dpo_check.margin_summary([1.0, 2.0, 3.0, -1.0])
    assert s["reward_margin"] == pytest.approx(1.25)
    assert s["margin_ci_low"] < 1.25 < s["margin_ci_high"]
    half = 3.182446305284263 * np.std([1.0, 2.0, 3.0, -1.0], ddof=1) / 2  # t(0.975, 3)
    assert s["margin_ci_high"] - 1.25 == pytest.approx(half)
    assert s["reward_accuracy"] == 0.75
    with pytest.raises(dpo_check.DpoCheckError, match="at least 2"):
        dpo_check.margin_summary([1.0])


@pytest.fixture(scope="module")
def lora_init(base_and_adapters, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base, _ = base_and_adapters
    folder = tmp_path_factory.mktemp("init") / "adapter"
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    model.save_pretrained(folder)
    return folder


def test_noise_norm_is_a_random_walk_linear_in_the_rate(lora_init):
    def norm(lr, steps):
        return dpo_check.noise_norm(lora_init, lr, steps, steps, scheduler="constant", seed=1)

    short, long = norm(1e-3, 100), norm(1e-3, 400)
    # noise steps add up like a random walk: 4x the steps, about 2x the norm (a consistent
    # gradient would give 4x)
    assert 1.5 < long / short < 2.7
    assert norm(1e-4, 100) / short == pytest.approx(0.1, rel=0.1)
    with pytest.raises(dpo_check.DpoCheckError, match="steps"):
        dpo_check.noise_norm(lora_init, 1e-3, 0, 10)


def test_norms_beside_noise_use_each_runs_own_rate(base_and_adapters, lora_init, tmp_path):
    import json
    import shutil

    from helpers.deltas import load_deltas
    from helpers.geometry import global_norm
    from helpers.profiles import load_profile

    _, folders = base_and_adapters
    profile = load_profile("smoke")
    t = profile.train
    runs = {}
    for name, lr in (("sft", 1e-3), ("dpo", 1e-5)):
        runs[name] = tmp_path / name
        shutil.copytree(folders["moved"], runs[name])
        meta = {"lr": lr, "steps": 20, "result_step": 10, "init_dir": str(lora_init)}
        (runs[name] / "train_meta.json").write_text(json.dumps(meta))
    out = dpo_check.norms_beside_noise(runs, ["sft", "dpo", "dpo_samelr"], profile)
    assert set(out) == {"sft", "dpo"}  # a run not trained is left out
    for name, lr in (("sft", 1e-3), ("dpo", 1e-5)):
        noise = dpo_check.noise_norm(lora_init, lr, 10, 20, t.scheduler, t.warmup_ratio, t.weight_decay)
        assert out[name]["noise_norm"] == pytest.approx(noise)
        assert out[name]["norm"] == pytest.approx(global_norm(load_deltas(runs[name])))
        assert out[name]["ratio"] == pytest.approx(out[name]["norm"] / noise)
    assert out["sft"]["noise_norm"] > 10 * out["dpo"]["noise_norm"]


def test_unused_pairs_are_the_pairs_the_cap_leaves_out():
    import dataclasses

    from helpers.method_data import build_method_dataset
    from helpers.profiles import TrainConfig
    from tests.builders import make_rollouts

    records = make_rollouts(n_prompts=40, seed=3)
    train = dataclasses.replace(TrainConfig(), dpo_pairs_per_prompt=1, dpo_max_pairs=5, seed=7)
    trained = build_method_dataset(records, "dpo", train, seed=train.seed).to_list()
    held = dpo_check.unused_pairs(records, train)
    assert len(trained) == 5 and len(held) >= 2
    # one pair per prompt: held-out pairs come from prompts DPO never trained on
    assert not {p["prompt_id"] for p in held} & {p["prompt_id"] for p in trained}
    every = build_method_dataset(records, "dpo", dataclasses.replace(train, dpo_max_pairs=0), seed=7)
    assert len(held) + len(trained) == len(every)
    assert dpo_check.unused_pairs(records, dataclasses.replace(train, dpo_max_pairs=0)) == []


def test_precomputed_reference_gives_the_same_margins(base_and_adapters):
    base, folders = base_and_adapters
    pairs = dpo_check.heldout_pairs(PROBLEMS, ROWS)
    ref = dpo_check.reference_logps(base, pairs, 64)
    direct = dpo_check.reward_margins(base, folders["moved"], pairs, beta=0.1, max_length=64)
    reused = dpo_check.reward_margins(base, folders["moved"], pairs, beta=0.1, max_length=64, ref=ref)
    np.testing.assert_allclose(reused, direct, rtol=1e-5, atol=1e-6)
    with pytest.raises(dpo_check.DpoCheckError, match="ref"):
        dpo_check.reward_margins(
            base, folders["moved"], pairs, 0.1, 64, ref={"chosen": [0.0], "rejected": [0.0]}
        )
