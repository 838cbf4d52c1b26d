"""Issue 11 wiring on the smoke book: chapter 02's noise norms and online-GRPO sentence, chapter 04's
measure summaries and choice, chapter 07's reproduction table, all checked on the chapters' JSON."""

from __future__ import annotations

import pytest

from helpers.connectivity import MEASURES, claim_measure
from helpers.profiles import load_profile
from helpers.reproduction import MIXED, NOT_AT_SCALE, NOT_MEASURED, PATTERNS, REVERSED, SAME
from helpers.results import load_results

PROFILE = "smoke"


@pytest.fixture(scope="module")
def results(smoke_book) -> dict:
    return load_results(PROFILE)


def test_02_noise_norms_and_online_steps(results):
    out = results["02_training"]
    profile = load_profile(PROFILE)
    online = out["runs"]["online_grpo"]["steps"]
    assert f"{online}" in out["online_steps"] and "online" in out["online_steps"].lower()
    for rep in out["per_replicate"]:
        runs, noise = rep["runs"], rep["noise"]
        assert set(noise) == {"sft", "dpo", "dpo_samelr"} & set(runs)
        for name, n in noise.items():
            assert n["lr"] == runs[name]["lr"]
            assert n["norm"] == pytest.approx(runs[name]["delta_norm"], rel=1e-6)
            assert n["ratio"] == pytest.approx(n["norm"] / n["noise_norm"])
        if {"dpo", "dpo_samelr"} <= set(noise) and profile.train.lr > profile.train.lr_for("dpo"):
            assert (
                noise["dpo_samelr"]["noise_norm"] > noise["dpo"]["noise_norm"]
            )  # a larger rate walks further


def test_04_measure_summaries_follow_the_curves(results):
    out = results["04_mode_connectivity"]
    assert out["claim_measure"] == claim_measure(load_profile(PROFILE))
    for rep in out["per_replicate"]:
        assert set(rep["measures"]) == set(MEASURES)
        for m, s in rep["measures"].items():
            assert s["base"] == pytest.approx(next(iter(rep["rays"].values()))[m][0])
            assert s["adapters_min"] == pytest.approx(min(c[m][-1] for c in rep["rays"].values()))
            assert s["largest_chord_barrier"] == pytest.approx(max(rep["barrier_all"][m].values()))
            assert s["off_distribution"] == (s["base"] > s["log_vocab"])
        assert rep["barrier_endpoint_mean_all"]["solution_nll"] == rep["barrier_endpoint_mean_solution_nll"]


def test_07_reproduction_table(results):
    out = results["07_findings"]
    n = out["replicates"]
    rows = out["reproduction"]
    assert len(rows) == len(PATTERNS) and len({r["key"] for r in rows}) == len(rows)
    for r in rows:
        assert len(r["replicate_verdicts"]) == len(r["ours"]) == n
        assert set(r["replicate_verdicts"]) <= {SAME, REVERSED, NOT_AT_SCALE, NOT_MEASURED}
        per = r["replicate_verdicts"]
        assert r["verdict"] == (per[0] if len(set(per)) == 1 else MIXED), r["key"]
        assert r["study"], r["key"]  # every pattern names the study's numbers from data/study.yaml
    # the accuracy and geometry patterns are measurable on smoke in every replicate
    measured = {r["key"] for r in rows if NOT_MEASURED not in r["replicate_verdicts"]}
    assert {"accuracy_base_vs_five", "cluster_colinear", "barriers"} <= measured
