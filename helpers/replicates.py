"""Replicates: complete copies of the study's design, each with its own seeds.

Replicate j trains every method from its own LoRA initialisation (`lora.init_seed`) and
data order (`train.seed`), shared by all methods inside it, so a between-method
comparison is always made within one replicate. Replicate 0 is the profile as written.
Everything upstream of training (problems, base models, rollouts) is shared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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


# Controls every replicate trains: the noise floors the criteria use (the same loss with
# another data order; from another LoRA seed, whose path bounds the harmless barrier). The
# others (dpo_samelr, online_grpo) are reported, not judged, and train in replicate 0 only.
EVERY_REPLICATE = ("sft_order", "sft_seed")


def replicate_run_names(profile: Profile, replicate: int = 0) -> list[str]:
    """The runs replicate `replicate` trains: every method, and the controls (all of them in
    replicate 0, those of EVERY_REPLICATE in the others)."""
    replicate_profile(profile, replicate)  # checks the range
    controls = [c for c in profile.train.controls if replicate == 0 or c in EVERY_REPLICATE]
    return list(profile.train.methods) + controls


def over_replicates(fn: Callable[[int], Any], profile: Profile) -> list[Any]:
    """[fn(0), fn(1), ...]: one result per replicate of `profile`, in order."""
    return [fn(j) for j in replicate_ids(profile)]


def chapter_record(
    per_replicate: Sequence[Mapping[str, Any]], summarise: Sequence[str], **shared: Any
) -> dict:
    """What a chapter writes: replicate 0's blocks at the top (the profile as written, so readers of
    one run still find them), `per_replicate` (each replicate's blocks, keyed alike),
    `summary` (the blocks named in `summarise`, each number as mean/min/max/n/values over
    replicates: helpers.spread.summarise_tree), `replicates` (how many) and the chapter-wide `shared`."""
    from .spread import summarise_tree

    if not per_replicate:
        raise ValueError("chapter_record needs the blocks of at least one replicate")
    summary = {key: summarise_tree([r.get(key) for r in per_replicate], key) for key in summarise}
    return {
        **per_replicate[0],
        **shared,
        "replicates": len(per_replicate),
        "per_replicate": list(per_replicate),
        "summary": summary,
    }


def replicate_results(results: Mapping[str, Any], replicate: int) -> dict[str, Any]:
    """The chapters' results (helpers.results.load_results) as replicate `replicate` alone saw them:
    each chapter's per-replicate blocks replace its top-level ones. A chapter with fewer replicates
    keeps only its chapter-wide keys, so what it lacks reads as not measured."""
    out = {}
    for chapter, record in results.items():
        rows = record.get("per_replicate") if isinstance(record, Mapping) else None
        if not rows:
            out[chapter] = record
            continue
        own = {k: v for k, v in record.items() if k not in rows[0] and k not in ("per_replicate", "summary")}
        out[chapter] = {**own, **rows[replicate]} if replicate < len(rows) else own
    return out


def replicate_count(results: Mapping[str, Any]) -> int:
    """How many replicates the chapters' results hold (the most any chapter has; 1 without any)."""
    counts = [r.get("replicates", 1) for r in results.values() if isinstance(r, Mapping)]
    return max(counts, default=1)
