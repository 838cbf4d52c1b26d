"""The reproduces/reversed table: each pattern's verdict on synthetic results built from the study's
own numbers (all "same"), then moved to the reverse, to neither, and with a number missing."""

from __future__ import annotations

import copy
import statistics

import pytest

from helpers import reproduction as rp
from helpers.claims import BARRIER_MARGIN, late_count
from helpers.study import load_study, study_value

STUDY = load_study()
MEASURE = "answer_ce_after_solution"


def v(key, pick=0):
    """A study number; for a range, its low (pick=0) or high (pick=1) end."""
    value = study_value(STUDY, key)
    return value[pick] if isinstance(value, list) else value


def study_like() -> dict:
    """Chapter-keyed results whose numbers are the study's: every pattern should be "same"."""
    cos = {
        "sft-rft": v("global_cosine.sft_rft"),
        "sft-rift": v("global_cosine.sft_rift"),
        "rft-rift": v("global_cosine.rft_rift"),
        "dft-sft": v("global_cosine.dft_sft"),
        "dft-rft": v("global_cosine.dft_rift"),
        "dft-rift": v("global_cosine.dft_rift"),
        **{f"grpo-{m}": v("global_cosine.grpo_sft_cluster") for m in ("sft", "rft", "rift")},
        **{
            f"dpo-{m}": v("global_cosine.dpo_sft_cluster", i % 2)
            for i, m in enumerate(("sft", "rft", "rift"))
        },
        "sft-sft_order": 0.98,  # the study ran no such rerun: a floor just above its cluster
    }
    layers = 36
    late = late_count(layers)
    orth_layers = [v("orthogonal_fraction.grpo_sft")] * (layers - late) + [
        v("orthogonal_fraction.grpo_sft_last5")
    ] * late
    top1 = {("sft", "rft"): v("top1_output.sft_cluster"), ("sft", "rift"): v("top1_output.sft_cluster", 1)}
    top1[("rft", "rift")] = v("top1_output.sft_cluster")
    top1.update({("dft", m): v("top1_output.dft") for m in ("sft", "rft", "rift")})
    acc = {m: v("gsm8k.five") / 100 for m in rp.FIVE} | {"base": v("gsm8k.base", 1) / 100}
    acc["dpo"] = v("gsm8k.dpo") / 100
    acc["grpo"] = v("gsm8k.five", 1) / 100
    p_small = v("mcnemar.dpo_vs_each") / 10
    mcnemar = {f"{a}-{m}": p_small for a in ("base", "dpo") for m in rp.FIVE}
    ts = [0.0, 0.5, 1.0]
    rift_dpo = study_value(STUDY, "lmc_ce.rift_dpo")
    sft_grpo = study_value(STUDY, "lmc_ce.sft_grpo")
    paths = {
        "rift-dpo": {"ts": ts, MEASURE: rift_dpo},
        "sft-grpo": {"ts": ts, MEASURE: [sft_grpo[0], sum(sft_grpo) / 2, sft_grpo[1]]},  # on the chord
        "sft-sft_order": {"ts": ts, MEASURE: [2.0, 2.02, 2.0]},
        "sft-sft_seed": {"ts": ts, MEASURE: [2.0, 2.01, 2.0]},
    }
    dpo_cka = v("cka.dpo_late_layers")
    cka = {"grpo-dpo": dpo_cka, "dft-dpo": dpo_cka, "sft-rift": 0.995}
    cka |= {"sft-grpo": v("cka.grpo_sft_rift_last_layer"), "rift-grpo": v("cka.grpo_sft_rift_last_layer")}
    cka |= {"base-sft": 0.1, "base-dpo": 0.1, "sft-sft_order": 0.1}  # left out of "pairs without DPO"
    return {
        "03_delta_geometry": {
            "geometry": {
                "global_cosine": cos,
                "orthogonal_fraction": {"grpo-sft": v("orthogonal_fraction.grpo_sft"), "sft_order-sft": 0.3},
                "orthogonal_fraction_by_layer": {"grpo-sft": orth_layers},
            },
            "pairs": [{"a": a, "b": b, "top1_output_mean": x} for (a, b), x in top1.items()],
            "chance": {"measures": {"top1_output_mean": {"mean": v("top1_output.dpo")}}},
        },
        "04_mode_connectivity": {"paths": paths},
        "05_cka": {"cka": {"last_layer": cka}},
        "06_evaluation": {"evaluation": {"accuracy": acc, "mcnemar_p": mcnemar}},
    }


def geo(r):
    return r["03_delta_geometry"]["geometry"]


def evaluation(r):
    return r["06_evaluation"]["evaluation"]


def set_top1(r, pair, value):
    for e in r["03_delta_geometry"]["pairs"]:
        if {e["a"], e["b"]} == set(pair):
            e["top1_output_mean"] = value


# each pattern: (mutation to its reverse, mutation to "neither", a key to delete)
def base_loses(r):
    evaluation(r)["accuracy"]["base"] = 0.5


def base_ties(r):
    evaluation(r)["mcnemar_p"].update({f"base-{m}": 0.5 for m in rp.FIVE})


def dpo_loses(r):
    evaluation(r)["accuracy"]["dpo"] = 0.5


def dpo_ties_one(r):
    evaluation(r)["mcnemar_p"]["dpo-rift"] = 0.2


def outsider_closer(r):
    geo(r)["global_cosine"]["dft-sft"] = 0.99


def noisy_rerun(r):
    geo(r)["global_cosine"]["sft-sft_order"] = 0.999


def dft_closest(r):
    geo(r)["global_cosine"].update({"sft-rft": 0.8, "sft-rift": 0.8, "dft-sft": 0.9})


def dft_between(r):
    geo(r)["global_cosine"]["dft-sft"] = v("global_cosine.grpo_sft_cluster") - 0.01


def dft_top1_low(r):
    for m in ("sft", "rft", "rift"):
        set_top1(r, ("dft", m), 0.2)


def dft_top1_mid(r):
    mid = (statistics.fmean([v("top1_output.sft_cluster"), v("top1_output.sft_cluster", 1)] * 1) + 0.11) / 2
    for m in ("sft", "rft", "rift"):
        set_top1(r, ("dft", m), mid)


def grpo_inside(r):
    geo(r)["orthogonal_fraction"]["grpo-sft"] = 0.35


def grpo_like_rerun(r):
    geo(r)["orthogonal_fraction"]["sft_order-sft"] = 0.6


def depth_falls(r):
    layers = geo(r)["orthogonal_fraction_by_layer"]["grpo-sft"]
    layers[-late_count(len(layers)) :] = [0.5] * late_count(len(layers))


def depth_flat(r):
    layers = geo(r)["orthogonal_fraction_by_layer"]["grpo-sft"]
    layers[:] = [v("orthogonal_fraction.grpo_sft") + 0.01] * len(layers)


def dpo_aligned(r):
    geo(r)["global_cosine"].update({f"dpo-{m}": 0.6 for m in ("sft", "rft", "rift")})


def dpo_partly(r):
    geo(r)["global_cosine"]["dpo-rft"] = 0.3


def barriers_swapped(r):
    paths = r["04_mode_connectivity"]["paths"]
    paths["rift-dpo"][MEASURE], paths["sft-grpo"][MEASURE] = [3.0, 3.5, 4.0], [2.0, 4.0, 3.0]


def barriers_both(r):
    r["04_mode_connectivity"]["paths"]["sft-grpo"][MEASURE] = [2.0, 4.0, 3.0]


def cka_raised(r):
    cka = r["05_cka"]["cka"]["last_layer"]
    cka.update({"sft-grpo": 0.7, "rift-grpo": 0.7, "grpo-dpo": 0.95, "dft-dpo": 0.95})


def cka_level(r):
    cka = r["05_cka"]["cka"]["last_layer"]
    cka.update({"grpo-dpo": 0.85, "dft-dpo": 0.85})


CASES = {
    "accuracy_base_vs_five": (
        base_loses,
        base_ties,
        ("06_evaluation", "evaluation", "mcnemar_p", "base-sft"),
    ),
    "accuracy_dpo_best": (dpo_loses, dpo_ties_one, ("06_evaluation", "evaluation", "accuracy", "dpo")),
    "cluster_colinear": (
        outsider_closer,
        noisy_rerun,
        ("03_delta_geometry", "geometry", "global_cosine", "rft-rift"),
    ),
    "dft_further": (dft_closest, dft_between, ("03_delta_geometry", "geometry", "global_cosine", "dft-sft")),
    "dft_top1_output": (dft_top1_low, dft_top1_mid, ("03_delta_geometry", "chance")),
    "grpo_orthogonal": (
        None,
        grpo_inside,
        ("03_delta_geometry", "geometry", "orthogonal_fraction", "grpo-sft"),
    ),
    "grpo_orthogonal_depth": (
        depth_falls,
        depth_flat,
        ("03_delta_geometry", "geometry", "orthogonal_fraction_by_layer", "grpo-sft"),
    ),
    "dpo_near_orthogonal": (
        dpo_aligned,
        dpo_partly,
        ("03_delta_geometry", "geometry", "global_cosine", "dpo-rift"),
    ),
    "barriers": (barriers_swapped, barriers_both, ("04_mode_connectivity", "paths", "sft-grpo")),
    "cka_drop": (cka_raised, cka_level, ("05_cka", "cka", "last_layer", "dft-dpo")),
}
PATTERN = {p.__name__: p for p in rp.PATTERNS}


def verdict(key, results):
    return (
        PATTERN[key](results, STUDY)["verdict"]
        if key != "barriers"
        else rp.barriers(results, STUDY, MEASURE)["verdict"]
    )


def test_every_pattern_has_cases():
    assert set(CASES) == set(PATTERN)


@pytest.mark.parametrize("key", list(CASES))
def test_study_numbers_reproduce_themselves(key):
    assert verdict(key, study_like()) == rp.SAME


@pytest.mark.parametrize("key", list(CASES))
def test_reversed_neither_and_missing(key):
    to_reverse, to_neither, missing = CASES[key]
    if to_reverse is not None:
        r = study_like()
        to_reverse(r)
        assert verdict(key, r) == rp.REVERSED
    r = study_like()
    to_neither(r)
    assert verdict(key, r) == rp.NOT_AT_SCALE
    r = study_like()
    node = r
    for part in missing[:-1]:
        node = node[part]
    del node[missing[-1]]
    assert verdict(key, r) == rp.NOT_MEASURED


def test_values_reported_are_the_compared_ones():
    r = study_like()
    ours = rp.cka_drop(r, STUDY)["ours"]
    # base and control pairs are not "pairs without DPO"
    assert ours["of the pairs without DPO"] == pytest.approx(statistics.fmean([0.995, 0.85, 0.85]))
    bar = rp.barriers(r, STUDY, MEASURE)["ours"]
    assert bar["a barrier must exceed"] == pytest.approx(0.02 + BARRIER_MARGIN)
    assert bar["barrier rift-dpo"] == pytest.approx(7.06 - (3.82 + 8.64) / 2)
    assert rp.barriers(r, STUDY, "answer_ce")["verdict"] == rp.NOT_MEASURED  # the measure picks the curves


def test_replicates_agree_or_are_mixed():
    same, other = study_like(), study_like()
    base_loses(other)
    agree = rp.over_replicates(rp.accuracy_base_vs_five, [same, copy.deepcopy(same)], STUDY)
    assert agree["verdict"] == rp.SAME and len(agree["ours"]) == 2
    both_reversed = rp.over_replicates(rp.accuracy_base_vs_five, [other, copy.deepcopy(other)], STUDY)
    assert both_reversed["verdict"] == rp.REVERSED
    mixed = rp.over_replicates(rp.accuracy_base_vs_five, [same, other], STUDY)
    assert mixed["verdict"] == rp.MIXED and mixed["replicate_verdicts"] == [rp.SAME, rp.REVERSED]
    missing = study_like()
    del missing["06_evaluation"]
    assert rp.over_replicates(rp.accuracy_base_vs_five, [same, missing], STUDY)["verdict"] == rp.MIXED
    with pytest.raises(ValueError, match="no replicates"):
        rp.over_replicates(rp.accuracy_base_vs_five, [], STUDY)


def test_table_and_merged_ours_form():
    r = study_like()
    table = rp.reproduction_table([r, r], STUDY, measure=MEASURE)
    assert list(table.index) == [p.__name__ for p in rp.PATTERNS]
    assert set(table["verdict"]) == {rp.SAME}
    assert " | " in table.loc["dft_further", "ours"]  # one value per replicate
    ours = {
        "geometry": geo(r),
        "connectivity": {"curves": r["04_mode_connectivity"]["paths"]},
        "cka": r["05_cka"]["cka"],
        "evaluation": evaluation(r),
    }
    verdicts = rp.reproduction_table(ours, STUDY, measure=MEASURE)["verdict"]
    assert verdicts["dft_top1_output"] == rp.NOT_MEASURED  # chapter 03's pairs are outside `ours`
    assert (verdicts.drop("dft_top1_output") == rp.SAME).all()
