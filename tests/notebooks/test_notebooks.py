"""Every notebook: committed thin and without outputs, and runs headless on the smoke profile.

The chapters run once, in order, in the session fixture `smoke_book` (later chapters
reuse the cached stages of earlier ones); the tests assert on the JSON numbers each
chapter writes, never on rendered output.
"""

import ast
import math
from pathlib import Path

import nbformat
import pytest

from helpers.book import notebooks
from helpers.cache import read_json
from helpers.profiles import load_profile
from helpers.replicates import SEED_STRIDE, replicate_run_names
from helpers.results import load_results

NOTEBOOKS = notebooks()
PROFILE = "smoke"
CHAPTERS = [
    "00_problems",
    "01_base_model_and_rollouts",
    "02_training",
    "03_delta_geometry",
    "04_mode_connectivity",
    "05_cka",
    "06_evaluation",
    "07_findings",
    "08_beyond",
]


def test_there_are_chapters_in_order():
    assert [p.stem for p in NOTEBOOKS] == CHAPTERS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_thin_and_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "clear outputs before committing"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "an H1 title comes first"
    assert "import" in code[0].source, "the first code cell holds the imports"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and code[1] is params[0], "the second code cell is the one tagged `parameters`"
    assigned = ast.parse(params[0].source).body
    assert all(isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant) for s in assigned)
    names = [t.id for s in assigned for t in s.targets]
    assert "PROFILE" in names and all(n.isupper() for n in names)
    headers = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
    assert headers[0].startswith("## 1.") and headers[-1].startswith("## Summary")
    assert all(len(c.source.splitlines()) <= 16 for c in code), "long code belongs in helpers/"


@pytest.fixture(scope="module")
def results(smoke_book) -> dict:
    return load_results(PROFILE)


def test_every_chapter_wrote_its_numbers(results):
    assert sorted(results) == CHAPTERS


def test_00_problems(results):
    out = results["00_problems"]
    assert out["n_train"] == 24 and out["n_eval"] == 16 and out["train_eval_overlap"] == 0
    assert out["gsm8k_test_n"] == 1319 and out["gsm8k_checker_agreement"] == 1.0
    assert set(out["steps_histogram"]) <= {"2", "3", "4"}


def test_01_base_model_and_rollouts(results):
    out = results["01_base_model_and_rollouts"]
    r = out["rollouts"]
    assert r["n_rollouts"] == 24 * 4 and r["n_prompts"] == 24
    assert 0 < r["reward_mean"] < 1 and r["mixed_groups"] > 0 and r["dpo_pairs"] > 0
    # Diversity beside the reward: smoke's oracle teacher repeats its gold solution, so some
    # rollouts are copies; a corrupted one is a text of its own.
    assert r["n_prompts"] <= r["unique_completions"] < r["n_rollouts"]
    assert r["unique_share"] == r["unique_completions"] / r["n_rollouts"]
    assert 0 < r["distinct_dpo_pairs"] <= r["dpo_pairs"] and r["identical_groups"] < r["n_prompts"]
    assert out["student_parameters"] > 0 and "student" in out["pretrain"]


def _within(summary, where: str) -> None:
    """A summary over replicates: its mean lies between its min and max, all from its values."""
    values = [v for v in summary["values"] if v is not None]
    assert summary["n"] == len(values), where
    if values:
        assert summary["min"] == min(values) and summary["max"] == max(values), where
        assert summary["min"] - 1e-12 <= summary["mean"] <= summary["max"] + 1e-12, where


def _replicates(out: dict) -> list[dict]:
    profile = load_profile(PROFILE)
    assert out["replicates"] == profile.train.replicates == len(out["per_replicate"]) >= 2
    return out["per_replicate"]


def test_02_training(results):
    out = results["02_training"]
    profile = load_profile(PROFILE)
    per_replicate = _replicates(out)
    assert out["runs"] == per_replicate[0]["runs"]  # the top level is replicate 0: the profile as written
    inits = set()
    for j, rep in enumerate(per_replicate):
        runs = rep["runs"]
        assert sorted(runs) == sorted(replicate_run_names(profile, j))
        for name, run in runs.items():
            assert math.isfinite(run["last_loss"]), (j, name)
            # The smoke student never answers right, so online GRPO (rewards from its own samples)
            # has no signal and may not move; every offline method learns from the oracle's rollouts.
            if name != "online_grpo":
                assert run["delta_norm"] > 0, f"{name} did not move its LoRA weights in replicate {j}"
        assert runs["dpo"]["first_loss"] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference
        # each replicate its own data order (and sft_order one more), and its own LoRA init
        assert runs["sft"]["data_seed"] == profile.train.seed + SEED_STRIDE * j
        assert runs["sft_order"]["data_seed"] == runs["sft"]["data_seed"] + 1
        inits.add(read_json(Path(rep["adapters"]["sft"]) / "train_meta.json")["init_dir"])
    assert len(inits) == len(per_replicate)
    runs = per_replicate[0]["runs"]
    assert runs["dpo"]["lr"] == profile.train.lr_for("dpo") and runs["dpo_samelr"]["lr"] == profile.train.lr
    norm = out["summary"]["runs"]["sft"]["delta_norm"]
    _within(norm, "sft delta_norm")
    assert norm["values"] == [rep["runs"]["sft"]["delta_norm"] for rep in per_replicate]
    assert len(set(norm["values"])) == len(norm["values"])  # other seeds, other updates
    assert out["summary"]["runs"]["online_grpo"]["last_loss"]["n"] == 1  # replicate 0 only


def test_03_delta_geometry(results):
    out = results["03_delta_geometry"]
    per_replicate = _replicates(out)
    assert out["geometry"] == per_replicate[0]["geometry"]
    for j, rep in enumerate(per_replicate):
        geo = rep["geometry"]
        measured = [
            p for p in geo["global_cosine"] if "online_grpo" not in p
        ]  # a zero update has no direction
        moving = [n for n in replicate_run_names(load_profile(PROFILE), j) if n != "online_grpo"]
        assert len(measured) == math.comb(len(moving), 2)
        for pair in measured:
            assert -1 - 1e-9 <= geo["global_cosine"][pair] <= 1 + 1e-9, pair
            assert 0 <= geo["median_smallest_angle"][pair] <= 90 + 1e-9, pair
            a, b = pair.split("-", 1)
            for ordered in (pair, f"{b}-{a}"):
                span, top = geo["orthogonal_fraction"][ordered], geo["orthogonal_fraction_top_k"][ordered]
                direction = geo["orthogonal_fraction_direction"][ordered]
                assert 0 <= span <= 1 + 1e-9, ordered
                # the three readings: direction is sqrt(1 - cos^2), span never exceeds it nor top-k
                assert direction == pytest.approx(
                    math.sqrt(max(0.0, 1 - geo["global_cosine"][pair] ** 2)), abs=1e-9
                )
                assert span <= direction + 1e-9 and span <= top + 1e-9, ordered
        # Same loss, same init, another data order: closer to SFT than DPO is, in every replicate.
        assert geo["global_cosine"]["sft-sft_order"] > abs(geo["global_cosine"]["sft-dpo"]), j
    assert out["readings"] == ["span", "top_k", "direction"] and 1 <= out["top_k"] <= out["k"]
    summary = out["summary"]["geometry"]
    for pair, s in summary["global_cosine"].items():
        _within(s, pair)
        values = [rep["geometry"]["global_cosine"].get(pair) for rep in per_replicate]
        assert s["values"] == [None if v is None or math.isnan(v) else v for v in values]  # nan: no direction
    assert len(set(summary["global_cosine"]["sft-rft"]["values"])) == len(per_replicate)
    layers = summary["orthogonal_fraction_by_layer"]["grpo-sft"]
    assert len(layers["mean"]) == len(out["layers"])
    assert all(lo <= m <= hi for lo, m, hi in zip(layers["min"], layers["mean"], layers["max"], strict=True))
    # The chance baseline: two random updates are near-orthogonal, and farther apart than a rerun.
    chance = out["chance"]["measures"]
    assert abs(chance["global_cosine"]["mean"]) < summary["global_cosine"]["sft-sft_order"]["min"]
    assert chance["orth_frac"]["mean"] <= chance["orth_frac_direction"]["mean"] + 1e-9
    assert out["chance"]["samples"] >= 2 and out["chance"]["top_k"] == out["top_k"]


def test_04_mode_connectivity(results):
    out = results["04_mode_connectivity"]
    per_replicate = _replicates(out)
    for rep in per_replicate:
        assert rep["connectivity"]["measure"] == "answer_ce"
        for pair, curve in rep["paths"].items():
            assert len(curve["ts"]) == load_profile(PROFILE).analysis.lmc_points
            # both definitions, on both measures, for every path
            assert rep["connectivity"]["barrier"][pair] >= 0
            assert rep["connectivity"]["barrier_endpoint_mean"][pair] >= 0
            assert (
                rep["barrier_solution_nll"][pair] >= 0
                and rep["barrier_endpoint_mean_solution_nll"][pair] >= 0
            )
            ce = curve["answer_ce"]
            assert rep["connectivity"]["barrier_endpoint_mean"][pair] == pytest.approx(
                max(max(ce) - (ce[0] + ce[-1]) / 2, 0.0), abs=1e-9
            )
            # t = 0 of a path is adapter a alone: the same loss as t = 1 of the ray base -> a.
            a = pair.split("-", 1)[0]
            assert ce[0] == pytest.approx(rep["rays"][a]["answer_ce"][-1], rel=1e-5)
        assert {"sft-sft_order", "sft-sft_seed"} <= set(rep["paths"])  # the control paths, in every replicate
    for pair, s in out["summary"]["connectivity"]["barrier_endpoint_mean"].items():
        _within(s, pair)
    start = out["summary"]["paths"]["sft-grpo"]["answer_ce"]
    assert start["values"][0] != start["values"][1]  # another replicate, another SFT and GRPO


def test_05_cka(results):
    out = results["05_cka"]
    for rep in _replicates(out):
        for pair, values in rep["linear"].items():
            assert all(-1e-6 <= v <= 1 + 1e-6 for v in values), pair
    for pair, s in out["summary"]["cka"]["last_layer"].items():
        _within(s, pair)
    assert out["n_prompts"] == load_profile(PROFILE).analysis.cka_prompts


def test_06_evaluation(results):
    out = results["06_evaluation"]
    for rep in _replicates(out):
        ev = rep["evaluation"]
        assert "base" in ev["accuracy"] and "sft" in ev["accuracy"]
        for name, acc in ev["accuracy"].items():
            lo, hi = ev["ci"][name]
            assert 0 <= lo <= acc <= hi <= 1, name
        assert all(0 <= p <= 1 for p in ev["mcnemar_p"].values())
        assert all(ev["mcnemar_p_holm"][k] >= ev["mcnemar_p"][k] - 1e-12 for k in ev["mcnemar_p"])
    accuracy = out["summary"]["evaluation"]["accuracy"]
    for name, s in accuracy.items():
        _within(s, name)
    assert accuracy["sft"]["n"] == out["replicates"] and accuracy["online_grpo"]["n"] == 1


def test_07_findings(results):
    out = results["07_findings"]
    n = out["replicates"]
    assert n == load_profile(PROFILE).train.replicates
    outcomes = {"holds", "does not hold", "inconclusive", "not measured"}
    for form in ("study_forms", "published_forms"):
        assert set(out["verdicts"][form]) == {"i", "ii", "iii", "iv"}
        assert set(out["verdicts"][form].values()) <= outcomes
        # Every claim was measurable: all the runs and analyses it needs exist on smoke.
        assert all(c["missing"] == [] for c in out["claims"][form])
        for c in out["claims"][form]:
            per = c["verdicts"]
            assert len(per) == n and set(per) <= {"holds", "does not hold"}
            # holds / does not hold exactly when every replicate agrees, inconclusive otherwise
            expected = per[0] if len(set(per)) == 1 else "inconclusive"
            assert c["verdict"] == expected, c["id"]
            for j in range(n):  # within a replicate, a claim holds exactly when each of its checks passed
                assert (per[j] == "holds") == all(x["ok"][j] for x in c["checks"]), (c["id"], j)
            for x in c["checks"]:
                assert len(x["ok"]) == len(x["margins"]) == n
                assert all(
                    (m >= 0) == ok for m, ok in zip(x["margins"], x["ok"], strict=True) if m is not None
                )
        # every definition of claims (iii) and (iv) was judged in every replicate
        definitions = out["definitions"][form]
        assert len(definitions) == 8 and all(
            d["missing"] == [] and len(d["verdicts"]) == n for d in definitions
        )
        assert {(d["claim"], d["reading"]) for d in definitions} >= {("iii", "direction"), ("iv", None)}
    row = out["headline"]["global_cosine.sft_rft"]
    assert row["ours"] != "not measured" and len(row["ours_values"]) == n
    assert out["headline"]["controls.lr10x_cosine"]["ours"].endswith(f"[1 of {n}]")  # replicate 0 only
    # the study's two pairs, each reading computed: direction exactly sqrt(1 - cos^2)
    for row in out["reading_match"]:
        assert row["readings"]["direction"]["value"] == pytest.approx(math.sqrt(1 - row["cosine"] ** 2))
        assert row["readings"]["span"]["value"] <= row["readings"]["direction"]["value"]
    assert {r["pair"] for r in out["reading_match"]} == {"grpo-sft", "online_grpo-sft"}
    assert {r["measure"] for r in out["beside_chance"]} >= {"global cosine", "orthogonal fraction, direction"}
    assert len(out["beside_chance_per_replicate"]) == n


def test_08_beyond(results, smoke_book, tmp_path):
    from helpers import book
    from helpers.beyond_findings import HOLDS, MIN_REPLICATES, verdict

    out = results["08_beyond"]
    profile = load_profile(PROFILE)
    reps = [str(j) for j in range(profile.train.replicates)]
    assert out["replicates"] == list(range(profile.train.replicates))
    # dose-response: share 0 is RFT's own run (cosine 1), each level measured in every replicate
    points = out["dose"]["points"]
    assert {(str(p["replicate"]), p["level"]) for p in points} == {
        (j, lv) for j in reps for lv in out["dose"]["levels"]
    }
    assert all(p["cosine_to_rft"] == pytest.approx(1.0, abs=1e-9) for p in points if p["level"] == "0")
    assert set(out["dose"]["per_replicate"]) == set(reps) and math.isfinite(out["dose"]["fit"]["slope"])
    # trajectories: every kept step, a run's cosine to itself at the result step is 1
    for t in out["trajectories"].values():
        assert t["steps"] == list(profile.train.kept_steps())
        at = t["steps"].index(profile.train.result_step)
        assert all(v[at] == pytest.approx(1.0) for v in t["cosine_to_final"].values())
    # the contrastive family: on the cosine map and joined to SFT and DPO, both barrier kinds
    c = out["contrastive"]
    assert c["methods"] and c["lr"] == profile.train.lr_for("dpo")
    for j in c["replicates"]:
        for m in c["methods"]:
            assert {f"{m}-dpo", f"{m}-sft"} <= set(c["paths"][j])
            assert f"dpo-{m}" in c["cosine"][j] or f"{m}-dpo" in c["cosine"][j]
        assert all(b >= 0 for p in c["paths"][j].values() for k in p["barrier"].values() for b in k.values())
    # function space: every method of every replicate, KL never negative, SFT's cosine to itself 1
    rows = out["function_space"]["rows"]
    assert len(rows) == len(reps) * len(profile.train.methods) + len(c["replicates"]) * len(c["methods"])
    assert all(r["forward_kl"] >= 0 for r in rows)
    assert all(r["cosine_to_sft"] == pytest.approx(1.0) for r in rows if r["method"] == "sft")
    # findings: each verdict follows from its per-replicate checks
    for f in out["findings"]:
        oks = {j: v["ok"] for j, v in f["per_replicate"].items()}
        assert f["verdict"] == verdict(oks)[0]
        assert (f["verdict"] == HOLDS) == (
            len(oks) >= MIN_REPLICATES and all(v is True for v in oks.values())
        )
    # the first run built its own stages; a second run of the chapter builds (trains) nothing
    assert any(s.startswith("mixture-") for s in out["stages_built"])
    assert any(s.startswith("contrastive-") for s in out["stages_built"])
    book.execute(PROFILE, tmp_path, only=["08_beyond"])
    again = load_results(PROFILE, "08_beyond")
    assert again["stages_built"] == [] and again["dose"]["points"] == out["dose"]["points"]
