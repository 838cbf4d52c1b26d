"""Chapter 02's sentence on online GRPO's steps: the step counts and costs it states are the profile's
and the runs' own."""

from __future__ import annotations

import dataclasses

import pytest

from helpers.profiles import load_profile
from helpers.protocol import online_prompts_per_step, online_steps_sentence, seconds_per_step


def profile_with(online_steps: int, batch: int = 16, k: int = 4):
    p = load_profile("tiny")
    t = dataclasses.replace(
        p.train, steps=100, online_grpo_steps=online_steps, batch_size=batch, grad_accum=1
    )
    return dataclasses.replace(p, train=t, rollouts=dataclasses.replace(p.rollouts, k=k))


def runs(online_steps: int) -> dict:
    return {
        "sft": {"steps": 100, "seconds": 20.0},  # 0.20 s per step
        "dpo": {"steps": 100, "seconds": 40.0},  # 0.40
        "rft": {"steps": 100, "seconds": 22.0},  # 0.22: the median offline step
        "online_grpo": {"steps": online_steps, "seconds": 0.5 * online_steps},
    }


def test_seconds_per_step_is_online_against_the_offline_median():
    assert seconds_per_step(runs(40)) == pytest.approx((0.5, 0.22))
    with pytest.raises(KeyError, match="online_grpo"):
        seconds_per_step({"sft": {"steps": 1, "seconds": 1.0}})


def test_prompts_per_step_are_whole_groups():
    assert online_prompts_per_step(profile_with(40)) == 4
    assert online_prompts_per_step(profile_with(40, batch=6, k=4)) == 1
    assert online_prompts_per_step(profile_with(40, batch=2, k=4)) == 1


def test_sentence_states_the_counts_and_the_cost():
    fewer = online_steps_sentence(profile_with(40), runs(40))
    assert fewer.startswith("Online GRPO trains 40 steps where every other run trains 100")
    assert "0.50 s against 0.22 s for an offline step (2.3x)" in fewer
    assert "about 30 more seconds" in fewer  # 60 missing steps at 0.5 s
    assert "4 completions for each of 4 prompts" in fewer
    same = online_steps_sentence(profile_with(100), runs(100))
    assert same.startswith("Every run trains 100 steps, online GRPO included")
    assert "more seconds" not in same and "(2.3x)" in same
    many = online_steps_sentence(
        profile_with(40), {**runs(40), "online_grpo": {"steps": 40, "seconds": 200.0}}
    )
    assert "about 5 more minutes" in many  # 60 steps at 5 s
    assert online_steps_sentence(profile_with(40), {"sft": {"steps": 100, "seconds": 1.0}}) == ""
