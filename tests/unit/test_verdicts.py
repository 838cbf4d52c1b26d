"""Verdicts over replicates: a claim holds (fails) only when it holds (fails) in every replicate,
and is inconclusive when the replicates disagree; each criterion keeps its margin per replicate."""

import copy

import pytest

from helpers import findings as fd
from helpers import verdicts as vd
from helpers.headline import headline_over_replicates
from helpers.study import load_study
from tests.unit.test_findings import GOOD, _with

STUDY = load_study()
FLOOR = GOOD["geometry"]["global_cosine"]["sft-sft_order"]


# Claim (i) fails through its colinearity criterion, or through its McNemar criterion.
NOT_COLINEAR = ("geometry/global_cosine/sft-rift", FLOOR - fd.COLINEAR_MARGIN - 0.05)
DIFFERENT_ACCURACY = ("evaluation/mcnemar_p/rft-rift", fd.MCNEMAR_ALPHA / 10)


def _verdicts(replicates) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in vd.evaluate_over_replicates(replicates, STUDY)}


def test_holds_in_every_replicate_holds():
    assert _verdicts([GOOD, GOOD, GOOD]) == {k: fd.HOLDS for k in ("i", "ii", "iii", "iv")}


def test_replicates_that_disagree_are_inconclusive():
    verdicts = _verdicts([GOOD, _with(*NOT_COLINEAR), GOOD])
    assert verdicts["i"] == vd.INCONCLUSIVE  # "any replicate" would say holds, "first" too
    assert all(v == fd.HOLDS for k, v in verdicts.items() if k != "i")
    assert _verdicts([_with(*NOT_COLINEAR), GOOD])["i"] == vd.INCONCLUSIVE  # "last" would say holds


def test_fails_in_every_replicate_does_not_hold_even_through_different_criteria():
    assert _verdicts([_with(*NOT_COLINEAR), _with(*NOT_COLINEAR)])["i"] == fd.FAILS
    claim = vd.evaluate_over_replicates([_with(*NOT_COLINEAR), _with(*DIFFERENT_ACCURACY)], STUDY)[0]
    assert claim["verdict"] == fd.FAILS and claim["verdicts"] == [fd.FAILS, fd.FAILS]
    checks = {x["name"]: x for x in claim["checks"]}
    # each criterion fails in one replicate only: inconclusive on its own
    assert checks["colinear"]["ok"] == [False, True] and checks["colinear"]["verdict"] == vd.INCONCLUSIVE
    assert checks["same accuracy"]["ok"] == [True, False]


def test_a_replicate_that_could_not_measure_makes_the_claim_not_measured():
    missing = _with("evaluation/mcnemar_p/sft-rift", None)
    claim = vd.evaluate_over_replicates([GOOD, missing], STUDY)[0]
    assert claim["verdict"] == fd.NOT_MEASURED and "evaluation.mcnemar_p[sft-rift]" in claim["missing"]


def test_margins_are_kept_per_replicate():
    low = _with("geometry/global_cosine/sft-rift", 0.95)
    per_replicate = [fd.evaluate_claims(o, STUDY)[0] for o in (GOOD, low)]
    claim = vd.evaluate_over_replicates([GOOD, low], STUDY)[0]
    colinear = next(x for x in claim["checks"] if x["name"] == "colinear")
    assert colinear["margins"] == [c["checks"][0]["margin"] for c in per_replicate]
    assert colinear["margins"][1] == pytest.approx(0.95 - (FLOOR - fd.COLINEAR_MARGIN))
    assert colinear["thresholds"] == [FLOOR - fd.COLINEAR_MARGIN] * 2
    table = vd.margin_table([claim])
    assert list(table.columns) == ["replicate 0", "replicate 1", "verdict"]
    assert table.loc[("(i)", "colinear"), "replicate 0"] == f"{colinear['margins'][0]:+.3g}"
    assert table.loc[("(i)", "colinear"), "replicate 1"] == f"{colinear['margins'][1]:+.3g} (fails)"
    assert claim["ours"]["cosine sft-rift"] == f"{(0.97 + 0.95) / 2:.3g} (0.95 to 0.97)"
    assert vd.verdict_table({"forms": [claim]}).iloc[0, 1] == "inconclusive (holds in 1 of 2)"


def test_every_check_has_a_name_and_a_margin_on_the_studys_numbers():
    for claim in fd.evaluate_claims(GOOD, STUDY):
        for check in claim["checks"]:
            assert check["name"] and (check["margin"] >= 0) == check["ok"], (claim["id"], check["name"])


def test_definitions_over_replicates():
    good = copy.deepcopy(GOOD)
    for suffix in ("_top_k", "_direction"):
        good["geometry"][f"orthogonal_fraction{suffix}"] = {"grpo-sft": 0.8, "sft_order-sft": 0.3}
        good["geometry"][f"orthogonal_fraction{suffix}_by_layer"] = {"grpo-sft": [0.7] * 31 + [0.9] * 5}
    rows = vd.definitions_over_replicates([good, _with("connectivity/barrier/sft-grpo", 1.0, good)], STUDY)
    assert len(rows) == 8 and all(len(r["verdicts"]) == 2 for r in rows)
    third = [r for r in rows if r["claim"] == "iii"]
    # the chord barrier of replicate 1 fails (iii); the endpoint-mean barrier was not measured there
    chord = [r["verdict"] for r in third if r["barrier_kind"] == "chord"]
    assert chord == [vd.INCONCLUSIVE] * 3
    assert {r["verdict"] for r in third if r["barrier_kind"] == "endpoint_mean"} == {fd.NOT_MEASURED}


def test_combine():
    assert vd.combine([fd.HOLDS, fd.HOLDS]) == fd.HOLDS
    assert vd.combine([fd.FAILS, fd.FAILS]) == fd.FAILS
    assert vd.combine([fd.HOLDS, fd.FAILS]) == vd.INCONCLUSIVE
    assert vd.combine([fd.HOLDS, fd.NOT_MEASURED]) == fd.NOT_MEASURED
    assert vd.combine([]) == fd.NOT_MEASURED


def test_headline_over_replicates_gives_the_mean_and_range():
    def results(cos: float, only_first: bool) -> dict:
        table = {"sft-rft": cos, "dpo-sft": 0.1, "dpo-rft": cos - 0.8, "dpo-rift": 0.07}
        if only_first:
            table["dpo-dpo_samelr"] = 0.3
        return {"03_delta_geometry": {"geometry": {"global_cosine": table}, "per_method": {}, "pairs": []}}

    table = headline_over_replicates([results(0.9, True), results(0.86, False)], STUDY)
    assert table.at["global_cosine.sft_rft", "ours"] == "0.88 (0.86 to 0.9)"
    assert table.at["global_cosine.sft_rft", "ours_values"] == [0.9, 0.86]
    assert table.at["controls.lr10x_cosine", "ours"] == "0.3 [1 of 2]"  # a control of replicate 0 only
    # a range per replicate: the mean range, then the widest over replicates
    assert table.at["global_cosine.dpo_sft_cluster", "ours"] == "0.065 to 0.1 (replicates: 0.06 to 0.1)"
    assert table.at["gsm8k.dpo", "ours"] == "not measured"
