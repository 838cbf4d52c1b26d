"""Chapter 02's "Does DPO learn?" on the smoke book, checked on the chapter's JSON."""

from __future__ import annotations

import pytest

from helpers.dpo_margin import HELDOUT_FACTOR, verdict
from helpers.profiles import load_profile
from helpers.results import load_results

PROFILE = "smoke"


@pytest.fixture(scope="module")
def out(smoke_book) -> dict:
    return load_results(PROFILE)["02_training"]


def test_02_dpo_margins_per_replicate_and_their_verdict(out):
    profile = load_profile(PROFILE)
    held = out["dpo_heldout"]
    assert held["problems"] == HELDOUT_FACTOR * profile.data.n_eval_problems
    assert 2 <= held["pairs"] <= held["problems"] and held["cpu_seconds"] > 0
    reps = out["per_replicate"]
    assert len(reps) == profile.train.replicates
    for j, rep in enumerate(reps):
        margins = rep["dpo_margin"]
        assert set(margins) == {"dpo", "dpo_samelr"} & set(rep["runs"]), j
        for m in margins.values():
            gold = m["gold"]
            assert gold["pairs"] == held["pairs"] and "margins" not in gold
            assert gold["margin_ci_low"] <= gold["reward_margin"] <= gold["margin_ci_high"]
            assert m["unused"] is None  # smoke trains on every pair (dpo_max_pairs: 0)
    for name, by_kind in out["dpo_verdicts"].items():
        assert by_kind["gold"] == verdict([r["dpo_margin"].get(name, {}).get("gold") for r in reps])
    assert out["summary"]["dpo_margin"]["dpo"]["gold"]["reward_margin"]["n"] == len(reps)
