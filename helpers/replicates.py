"""Replicates: complete copies of the study's design, each with its own seeds.

Replicate j trains every method from its own LoRA initialisation (`lora.init_seed`) and
data order (`train.seed`), shared by all methods inside it, so a between-method
comparison is always made within one replicate. Replicate 0 is the profile as written.
Everything upstream of training (problems, base models, rollouts) is shared.
"""

from __future__ import annotations

import dataclasses

from .profiles import Profile, profile_source

# Far apart, so a replicate's seeds never meet a control's (sft_seed: init + 1, sft_order: data + 1).
SEED_STRIDE = 1000


def replicate_ids(profile: Profile) -> list[int]:
    """0 .. train.replicates - 1."""
    return list(range(profile.train.replicates))


def replicate_profile(profile: Profile, replicate: int) -> Profile:
    """The profile of replicate `replicate`: its LoRA-init and data-order seeds moved by SEED_STRIDE."""
    if not 0 <= replicate < profile.train.replicates:
        raise ValueError(
            f"replicate {replicate} is outside 0..{profile.train.replicates - 1} "
            f"(profile {profile.name} has train.replicates = {profile.train.replicates})"
        )
    if replicate == 0:
        return profile
    shift = SEED_STRIDE * replicate
    lora = dataclasses.replace(profile.lora, init_seed=profile.lora.init_seed + shift)
    train = dataclasses.replace(profile.train, seed=profile.train.seed + shift)
    copy = dataclasses.replace(profile, lora=lora, train=train)
    if profile_source(profile) is not None:  # the file it came from still describes it, seeds aside
        object.__setattr__(copy, "_source", profile_source(profile))
    return copy
