"""The paper profile trains what the study trained: a 1,500-step schedule read at step 1,000, kept step adapters."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainingArguments, get_scheduler

from helpers import pipeline
from helpers.checkpoints import adapter_at_step, step_dir
from helpers.profiles import PROFILE_DIR, ProfileError, load_profile
from helpers.train import TrainConfigError, _training_args, train_method
from tests.builders import make_rollouts, save_base


def schedule_lr(args: dict, step: int) -> float:
    """The learning rate transformers uses for optimiser step `step` (1-based) under these arguments."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=args["learning_rate"])
    warmup = TrainingArguments(**args).get_warmup_steps(args["max_steps"])
    scheduler = get_scheduler(args["lr_scheduler_type"], optimizer, warmup, args["max_steps"])
    for _ in range(step - 1):
        optimizer.step()
        scheduler.step()
    return scheduler.get_last_lr()[0]


def test_paper_profile_steps_and_teacher(tmp_path) -> None:
    paper = load_profile("paper")
    t = paper.train
    assert (t.steps, t.result_step) == (1500, 1000)  # the study: 1,500 cosine steps, adapters read at 1,000
    assert t.result_step in t.kept_steps() and all(1 <= s <= t.steps for s in t.save_steps)
    assert t.replicates >= 1 and t.dpo_pairs_per_prompt == 1 and t.dpo_max_pairs == 1800
    # The study's teacher (DeepSeek-V4-Flash) is not something most users can run: another hub model samples
    # the rollouts unless a rollouts file is brought.
    assert paper.model.teacher not in ("tiny", "file") and "/" in paper.model.teacher
    assert not paper.model.teacher.startswith("oracle") and paper.model.rollouts_file is None
    # the whole prompt and a full-length rollout fit: nothing the teacher wrote is cut
    assert paper.model.max_length >= 512 + paper.rollouts.max_new_tokens
    # The schedule runs over all 1,500 steps: at step 1,000 the rate is about 0.27 of its peak, not 0.
    args = _training_args(paper, tmp_path, t.lr, t.seed)
    assert args["max_steps"] == 1500
    ratio = schedule_lr(args, t.result_step) / t.lr
    progress = (t.result_step - 1 - math.ceil(0.05 * 1500)) / (1500 - math.ceil(0.05 * 1500))
    assert ratio == pytest.approx(0.5 * (1 + math.cos(math.pi * progress)), rel=1e-6)
    assert 0.25 < ratio < 0.29


@pytest.mark.parametrize("name", ["smoke", "tiny"])
def test_cpu_profiles_read_the_last_step(name) -> None:
    t = load_profile(name).train
    assert t.result_step == t.steps and t.save_steps and max(t.save_steps) <= t.steps
    assert t.replicates == {"smoke": 2, "tiny": 3}[name]


def _edited(tmp_path: Path, **train) -> Path:
    raw = yaml.safe_load((PROFILE_DIR / "tiny.yaml").read_text())
    raw["train"].update(train)
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"result_step": 101}, "result_step.*1..train.steps"),
        ({"result_step": 0}, "result_step"),
        ({"save_steps": [50, 101]}, r"save_steps.*\[101\]"),
        ({"save_steps": [0]}, "save_steps"),
        ({"save_steps": ["25"]}, "save_steps.*list of integers"),
        ({"save_steps": 25}, "save_steps.*expected a list"),
        ({"replicates": 0}, "replicates"),
        ({"dpo_pairs_per_prompt": 0}, "dpo_pairs_per_prompt"),
        ({"dpo_max_pairs": -1}, "dpo_max_pairs"),
    ],
)
def test_bad_step_settings_name_the_field(tmp_path, edit, message) -> None:
    with pytest.raises(ProfileError, match="custom.yaml.*" + message):
        load_profile(_edited(tmp_path, **edit))
    assert load_profile(_edited(tmp_path, result_step=50, save_steps=[10, 100])).train.kept_steps() == (
        10,
        50,
        100,
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_base(tmp_path_factory.mktemp("base") / "model")


def smoke(**train):
    profile = load_profile("smoke")
    return dataclasses.replace(profile, train=dataclasses.replace(profile.train, log_every=1, **train))


def lora(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_result_step_reads_the_schedule_of_all_steps(tmp_path, base) -> None:
    rollouts = make_rollouts(6, 4)
    profile = smoke(steps=8, result_step=4, save_steps=(2, 8))
    out = train_method(profile, "sft", base, rollouts, tmp_path / "run", tmp_path / "init")
    log = {row["step"]: row for row in json.loads((out / "training_log.json").read_text())}
    assert sorted(log) == list(range(1, 9))  # training went on to the end of the schedule
    args = _training_args(profile, tmp_path, profile.train.lr, profile.train.seed)
    assert log[4]["lr"] == pytest.approx(schedule_lr(args, 4), rel=1e-6)
    assert log[4]["lr"] > 0.5 * profile.train.lr and log[8]["lr"] < log[4]["lr"]
    meta = json.loads((out / "train_meta.json").read_text())
    assert (meta["steps"], meta["result_step"], meta["kept_steps"]) == (8, 4, [2, 4, 8])
    assert meta["examples_seen"] == 4 * 8 and meta["examples_seen_total"] == 24 + 24 + 16  # 24 rows, batch 8
    assert meta["epochs"] == pytest.approx(32 / 24)
    assert meta["tokenization"] == {"kept": 24, "truncated": 0, "dropped": 0, "max_length": 192}
    for step in (2, 8):
        info = json.loads((step_dir(out, step) / "step.json").read_text())
        assert info == {"step": step, "rows_seen": 8 * step}
    assert not (out / "steps" / "step-000004").exists()  # the result step lives at the top
    assert not same(lora(out), lora(step_dir(out, 8))) and not same(lora(out), lora(step_dir(out, 2)))


def test_kept_adapters_are_the_weights_at_their_step(tmp_path, base) -> None:
    # With a constant rate the first four steps of an eight-step run are a four-step run: the adapter
    # kept at step 4 (and at step 2) must be that run's, bit for bit.
    rollouts = make_rollouts(6, 4)
    constant = dict(scheduler="constant", warmup_ratio=0.0)
    long = train_method(
        smoke(steps=8, result_step=4, save_steps=(2,), **constant),
        "rift",
        base,
        rollouts,
        tmp_path / "a",
        tmp_path / "i",
    )
    short = train_method(
        smoke(steps=4, result_step=4, save_steps=(2,), **constant),
        "rift",
        base,
        rollouts,
        tmp_path / "b",
        tmp_path / "i",
    )
    assert same(lora(long), lora(short))
    assert same(lora(step_dir(long, 2)), lora(step_dir(short, 2)))
    assert not same(lora(step_dir(long, 2)), lora(long))


def test_adapter_at_finds_kept_steps(tmp_path, base, monkeypatch) -> None:
    profile = smoke(steps=4, result_step=3, save_steps=(1, 4))
    out = train_method(profile, "sft", base, make_rollouts(6, 4), tmp_path / "run", tmp_path / "init")
    monkeypatch.setattr(pipeline, "adapter_stage", lambda p, name: out)
    assert pipeline.adapter_at(profile, "sft", 3) == out
    assert pipeline.adapter_at(profile, "sft", 1) == step_dir(out, 1)
    assert (pipeline.adapter_at(profile, "sft", 4) / "adapter_config.json").exists()
    with pytest.raises(ValueError, match="step 2 is not kept.*\\[1, 3, 4\\]"):
        pipeline.adapter_at(profile, "sft", 2)
    with pytest.raises(FileNotFoundError, match="no adapter at step 2"):
        adapter_at_step(out, 2, 3)


def test_train_method_refuses_a_result_step_beyond_the_schedule(tmp_path, base) -> None:
    with pytest.raises(TrainConfigError, match="result_step"):
        train_method(
            smoke(steps=2, result_step=4), "sft", base, make_rollouts(6, 4), tmp_path / "o", tmp_path / "i"
        )
    assert not (tmp_path / "o").exists() and not (tmp_path / "i").exists()


def test_reference_logps_cache_is_keyed_by_tokenizer_and_chat_template(tmp_path, base) -> None:
    from helpers import train
    from helpers.method_data import build_method_dataset
    from helpers.trainer import MethodCollator, tokenize_dataset

    profile = smoke()
    init = train.make_lora_init(profile, base, tmp_path / "init", seed=42)
    tokenizer, model = train._load(profile, base, init)
    pairs = build_method_dataset(make_rollouts(6, 4), "dpo", profile.train, seed=1)
    ds = tokenize_dataset(pairs, tokenizer, "dpo", profile.model.max_length)
    collator = MethodCollator(tokenizer.pad_token_id, dpo=True)
    first = train._cached_reference_logps(profile, base, model, tokenizer, ds, collator, tmp_path)
    again = train._cached_reference_logps(profile, base, model, tokenizer, ds, collator, tmp_path)
    assert first == again and len(list(tmp_path.glob("dpo_ref_logps-*"))) == 1  # reused

    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    train._cached_reference_logps(profile, base, model, tokenizer, ds, collator, tmp_path)
    assert len(list(tmp_path.glob("dpo_ref_logps-*"))) == 2  # another chat template: computed anew

    # the same base weights with another tokenizer file (one token added) in the folder
    other = tmp_path / "other-tokenizer"
    other.mkdir()
    for file in base.iterdir():
        (other / file.name).write_bytes(file.read_bytes())
    edited = json.loads((other / "tokenizer.json").read_text())
    edited["added_tokens"].append({**edited["added_tokens"][-1], "id": 10_000, "content": "<|extra|>"})
    (other / "tokenizer.json").write_text(json.dumps(edited))
    fresh = train._tokenizer_fingerprint(tokenizer, base)
    assert train._tokenizer_fingerprint(tokenizer, other)["files"] != fresh["files"]
