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
