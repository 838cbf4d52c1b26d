"""Replicates: own seeds per replicate, shared upstream stages, replicate 0 is the profile itself."""

import dataclasses

import pytest

from helpers import pipeline
from helpers.profiles import load_profile
from helpers.replicates import SEED_STRIDE, replicate_ids, replicate_profile


def test_replicate_zero_is_the_profile_and_others_move_only_the_training_seeds():
    profile = load_profile("smoke")
    assert replicate_profile(profile, 0) is profile
    assert replicate_ids(profile) == list(range(profile.train.replicates))
    other = replicate_profile(profile, 1)
    assert other.lora.init_seed == profile.lora.init_seed + SEED_STRIDE
    assert other.train.seed == profile.train.seed + SEED_STRIDE
    # everything else is the same design
    assert dataclasses.replace(other, lora=profile.lora, train=profile.train) == profile
    with pytest.raises(ValueError, match="outside"):
        replicate_profile(profile, profile.train.replicates)


def test_replicates_share_upstream_stages_but_not_their_init_or_runs():
    profile = load_profile("smoke")
    other = replicate_profile(profile, 1)
    assert pipeline._rollout_inputs(other) == pipeline._rollout_inputs(profile)
    assert pipeline.lora_init_dir(other) != pipeline.lora_init_dir(profile)
    assert pipeline.train_inputs(other) != pipeline.train_inputs(profile)


def test_a_runs_key_ignores_the_list_of_other_runs_and_the_replicate_count():
    profile = load_profile("smoke")
    t = profile.train
    fewer = dataclasses.replace(t, methods=t.methods[:2], controls=(), replicates=t.replicates + 1)
    assert pipeline.train_inputs(dataclasses.replace(profile, train=fewer)) == pipeline.train_inputs(profile)
    faster = dataclasses.replace(t, lr=t.lr * 2)
    assert pipeline.train_inputs(dataclasses.replace(profile, train=faster)) != pipeline.train_inputs(profile)


def test_every_replicate_trains_the_methods_and_the_noise_floor_controls():
    from helpers.replicates import EVERY_REPLICATE, replicate_run_names

    profile = load_profile("smoke")
    t = profile.train
    assert pipeline.run_names(profile) == list(t.methods) + list(t.controls)
    later = pipeline.run_names(profile, 1)
    assert later == list(t.methods) + [c for c in t.controls if c in EVERY_REPLICATE]
    assert {"sft_order", "sft_seed"} <= set(later) and "online_grpo" not in later
    with pytest.raises(ValueError, match="outside"):
        replicate_run_names(profile, t.replicates)


def test_a_replicate_reads_its_own_adapters(tmp_path, monkeypatch):
    monkeypatch.setenv("WSG_RUNS", str(tmp_path))
    profile = load_profile("smoke")
    seen = []
    monkeypatch.setattr(pipeline, "adapter_stage", lambda p, name: seen.append((p, name)) or tmp_path / name)
    pipeline.adapters(profile, ["sft"], replicate=1)
    assert seen == [(replicate_profile(profile, 1), "sft")]
    assert not pipeline.adapter_done(replicate_profile(profile, 1), "sft")


def test_chapter_record_and_the_view_of_one_replicate():
    from helpers.replicates import chapter_record, replicate_count, replicate_results

    blocks = [{"geometry": {"cos": {"a-b": 0.9}}}, {"geometry": {"cos": {"a-b": 0.5}}}]
    record = chapter_record(blocks, ["geometry"], layers=[0, 1])
    assert record["geometry"] == blocks[0]["geometry"] and record["layers"] == [0, 1]  # top: replicate 0
    assert record["replicates"] == 2 and record["per_replicate"] == blocks
    assert record["summary"]["geometry"]["cos"]["a-b"]["mean"] == pytest.approx(0.7)
    results = {"03": record, "01": {"n": 5}}
    second = replicate_results(results, 1)
    assert second["03"]["geometry"] == blocks[1]["geometry"] and second["03"]["layers"] == [0, 1]
    assert second["01"] == {"n": 5} and replicate_count(results) == 2
    assert "geometry" not in replicate_results(results, 2)["03"]  # a replicate the chapter lacks
