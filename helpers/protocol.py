"""Where a run departs from the shared protocol, in a sentence computed from the profile and the runs.

Chapter 02 says every run trains the same number of steps. Online GRPO is the one run whose
step count is its own knob (`train.online_grpo_steps`), because each of its steps first samples
K completions per prompt; the sentence here states the step counts and the measured cost of an
online step against an offline one, so the prose can never disagree with the profile.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from .profiles import Profile

ONLINE = "online_grpo"


def online_prompts_per_step(profile: Profile) -> int:
    """Prompts per online GRPO step: whole groups of K completions fill the batch (as helpers.train)."""
    k, t = profile.rollouts.k, profile.train
    return max(k, t.batch_size // k * k) // k * t.grad_accum


def seconds_per_step(runs: Mapping[str, Mapping[str, Any]]) -> tuple[float, float]:
    """(online GRPO's seconds per step, the median over the offline runs), from chapter 02's run table."""
    if ONLINE not in runs:
        raise KeyError(f"seconds_per_step: no {ONLINE} run among {', '.join(runs)}")

    def per_step(row: Mapping[str, Any]) -> float:
        return float(row["seconds"]) / float(row["steps"])

    offline = [per_step(row) for name, row in runs.items() if name != ONLINE and row.get("steps")]
    if not offline:
        raise KeyError("seconds_per_step: no offline run with steps to compare with")
    return per_step(runs[ONLINE]), statistics.median(offline)


def online_steps_sentence(profile: Profile, runs: Mapping[str, Mapping[str, Any]]) -> str:
    """Chapter 02's sentence on online GRPO's step count and what an online step costs.

    `runs` is chapter 02's run table as a dict ({run: {steps, seconds, ...}}, what
    `run_table(...).to_dict(orient="index")` gives). Empty when online GRPO was not trained.
    """
    if ONLINE not in runs:
        return ""
    t = profile.train
    online, offline = seconds_per_step(runs)
    steps = int(runs[ONLINE]["steps"])
    work = (
        f"an online step first samples {profile.rollouts.k} completions for each of "
        f"{online_prompts_per_step(profile)} prompts, and took {online:.2f} s against {offline:.2f} s "
        f"for an offline step ({online / offline:.1f}x) on this machine"
    )
    if steps == t.steps:
        return f"Every run trains {t.steps} steps, online GRPO included: {work}."
    extra = (t.steps - steps) * online
    cost = f"{extra / 60:.0f} more minutes" if extra >= 90 else f"{extra:.0f} more seconds"
    return (
        f"Online GRPO trains {steps} steps where every other run trains {t.steps}: {work}, so "
        f"matching the step count would cost about {cost}. Its update comes from fewer steps "
        "than the others', which its norm and its distances in chapter 03 reflect."
    )
