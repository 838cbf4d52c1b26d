"""helpers.dpo_margin: the book's DPO adapters' held-out reward margin stages and their verdict."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from helpers import dpo_check, dpo_margin
from helpers.cache import read_jsonl
from helpers.dpo_margin import DOES_NOT, INCONCLUSIVE, LEARNS
from tests.builders import make_adapter, save_base


def _summary(low: float, high: float) -> dict:
    return {"margin_ci_low": low, "margin_ci_high": high, "reward_margin": (low + high) / 2}


def test_a_replicate_learns_only_when_its_interval_is_above_zero():
    assert dpo_margin.replicate_verdict(_summary(0.001, 0.02)) == LEARNS
    assert dpo_margin.replicate_verdict(_summary(-0.001, 0.02)) == DOES_NOT
    assert dpo_margin.replicate_verdict(_summary(-0.03, -0.01)) == DOES_NOT  # learned the reverse
    assert dpo_margin.replicate_verdict(None) is None


def test_verdict_over_replicates_is_inconclusive_when_they_disagree():
    up, zero = _summary(0.01, 0.03), _summary(-0.01, 0.03)
    assert dpo_margin.verdict([up, up, up]) == LEARNS
    assert dpo_margin.verdict([zero, zero]) == DOES_NOT
    assert dpo_margin.verdict([up, zero, up]) == INCONCLUSIVE
    assert dpo_margin.verdict([zero, up]) == INCONCLUSIVE
    assert dpo_margin.verdict([up, None]) == LEARNS  # a replicate that did not train the run
    assert dpo_margin.verdict([None, None]) is None


def test_verdicts_and_table_per_run_and_pairs_set():
    up, zero = _summary(0.01, 0.03), _summary(-0.01, 0.03)
    per_replicate = [
        {
            "dpo": {"gold": {**up, "pairs": 5, "reward_accuracy": 0.6}, "unused": None},
            "dpo_samelr": {"gold": up},
        },
        {"dpo": {"gold": {**zero, "pairs": 5, "reward_accuracy": 0.4}, "unused": None}},
    ]
    per_replicate[0]["dpo_samelr"]["gold"].update(pairs=5, reward_accuracy=0.6)
    v = dpo_margin.verdicts(per_replicate)
    assert v == {
        "dpo": {"gold": INCONCLUSIVE, "unused": None},
        "dpo_samelr": {"gold": LEARNS, "unused": None},
    }
    rows = dpo_margin.margin_table(per_replicate)
    assert [(r["run"], r["replicate"], r["verdict"]) for r in rows] == [
        ("dpo", 0, LEARNS),
        ("dpo_samelr", 0, LEARNS),
        ("dpo", 1, DOES_NOT),
    ]


def test_margin_interval_covers_the_true_mean_at_its_level():
    # A half-width from the wrong n (or a z for a t) misses far more or far less than 5%.
    rng = np.random.default_rng(0)
    for n in (8, 300):
        draws = rng.normal(0.01, 0.05, size=(2000, n))
        hits = [
            s["margin_ci_low"] <= 0.01 <= s["margin_ci_high"] for s in map(dpo_check.margin_summary, draws)
        ]
        assert np.mean(hits) == pytest.approx(0.95, abs=0.015), n
    s = dpo_check.margin_summary(draws[0])
    half = stats.t.ppf(0.975, 299) * draws[0].std(ddof=1) / np.sqrt(300)
    assert s["pairs"] == 300 and s["margin_ci_high"] - s["reward_margin"] == pytest.approx(half)


def test_batched_logps_equal_one_sequence_at_a_time(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = save_base(tmp_path / "base")
    model = make_adapter(AutoModelForCausalLM.from_pretrained(base), seed=3, scale=0.5).eval()
    tok = AutoTokenizer.from_pretrained(base)
    texts = [("Question: What is 2 + 3?\nAnswer:", " 2 + 3 = 5.\n#### 5"), ("Q: 1?\nA:", " 1")] * 3
    texts.append(
        ("Question: a much longer prompt than the others here\nAnswer:", " it is 12 + 30 = 42.\n#### 42")
    )
    one = dpo_check._sequence_logps(model, tok, texts, 64, batch_size=1)
    batched = dpo_check._sequence_logps(model, tok, texts, 64, batch_size=4)
    assert np.isfinite(one).all() and len(set(np.round(one, 3))) > 1
    np.testing.assert_allclose(batched, one, rtol=1e-5, atol=1e-4)


def test_heldout_problems_are_fresh_and_deterministic():
    from helpers.data import load_problems
    from helpers.evaluate import load_eval_set
    from helpers.profiles import load_profile

    smoke = load_profile("smoke")
    problems = dpo_margin.heldout_problems(smoke)
    assert len(problems) == dpo_margin.HELDOUT_FACTOR * smoke.data.n_eval_problems
    assert problems == dpo_margin.heldout_problems(smoke)
    questions = {p["question"] for p in problems}
    assert len(questions) == len(problems)
    assert not questions & {p["question"] for p in load_eval_set(smoke)}
    d = smoke.data
    train = load_problems(d.train_source, "train", n=d.n_train_prompts, seed=d.seed, path=d.train_path)
    assert not questions & {p["question"] for p in train}
    assert all(p["solution"] for p in problems)


@pytest.fixture(scope="module")
def smoke_dpo(tmp_path_factory):
    """The smoke profile's DPO adapter of replicate 0, in a fresh run root."""
    import os

    from helpers.pipeline import adapter_stage, configure_environment
    from helpers.profiles import load_profile

    root = tmp_path_factory.mktemp("dpo_margin_runs")
    old = os.environ.get("WSG_RUNS")
    os.environ["WSG_RUNS"] = str(root)
    smoke = load_profile("smoke")
    configure_environment(smoke)
    try:
        yield smoke, adapter_stage(smoke, "dpo"), root
    finally:
        if old is None:
            os.environ.pop("WSG_RUNS", None)
        else:
            os.environ["WSG_RUNS"] = old


def test_margin_stage_on_smoke_scores_the_gold_pairs_and_is_cached(smoke_dpo):
    from helpers.pipeline import student_dir

    smoke, adapter, root = smoke_dpo
    folder = dpo_margin.heldout_stage(smoke)
    pairs = read_jsonl(folder / "pairs.jsonl")
    rows = read_jsonl(folder / "base_rows.jsonl")
    assert len(rows) == dpo_margin.HELDOUT_FACTOR * smoke.data.n_eval_problems
    assert len(pairs) == sum(not r["correct"] for r in rows) >= 2
    assert [p["rejected"] for p in pairs] == [r["completion"] for r in rows if not r["correct"]]
    result = dpo_margin.margin_stage(smoke, adapter)
    gold = result["gold"]
    assert gold["pairs"] == len(pairs) and len(gold["margins"]) == len(pairs)
    direct = dpo_check.reward_margins(
        student_dir(smoke), adapter, pairs, smoke.train.beta, smoke.model.max_length
    )
    np.testing.assert_allclose(gold["margins"], direct, rtol=1e-5, atol=1e-7)
    assert gold == dpo_check.margin_summary(gold["margins"]) | {"margins": gold["margins"]}
    assert np.abs(direct).max() > 0  # the adapter moved
    assert result["unused"] is None  # smoke trains on every pair: none left out
    assert result["cpu_seconds"] > 0
    # cached: the same inputs read the same folder; another beta is another stage
    built = sorted((root / "smoke").glob("dpo_margin-*"))
    assert (
        dpo_margin.margin_stage(smoke, adapter) == result
        and sorted((root / "smoke").glob("dpo_margin-*")) == built
    )
    other = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, beta=0.2))
    doubled = dpo_margin.margin_stage(other, adapter)["gold"]
    assert len(sorted((root / "smoke").glob("dpo_margin-*"))) == len(built) + 1
    np.testing.assert_allclose(doubled["margins"], 2 * np.asarray(gold["margins"]), rtol=1e-5, atol=1e-7)


def test_unused_pairs_are_scored_when_the_cap_leaves_some_out(smoke_dpo):
    smoke, adapter, _ = smoke_dpo
    capped = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, dpo_max_pairs=2))
    result = dpo_margin.margin_stage(capped, adapter)
    from helpers.method_data import load_rollouts
    from helpers.pipeline import rollouts_stage

    left_out = dpo_check.unused_pairs(load_rollouts(rollouts_stage(capped) / "rollouts.jsonl"), capped.train)
    if len(left_out) < 2:
        pytest.skip("the smoke rollouts have too few mixed groups for a cap to leave pairs out")
    assert result["unused"]["pairs"] == len(left_out)


def test_rate_text_follows_the_sweep():
    from helpers.dpo_margin_view import rate_markdown
    from helpers.profiles import load_profile

    smoke = load_profile("smoke")
    t = smoke.train

    def row(lr, acc, **extra):
        return {
            "lr": lr,
            "accuracy": acc,
            "ci_low": acc - 0.05,
            "ci_high": acc + 0.05,
            "base_accuracy": 0.5,
            **extra,
        }

    sweep = {
        "methods": {
            "sft": [row(t.lr, 0.55), row(3 * t.lr, 0.7)],
            "dpo": [row(t.lr_for("dpo"), 0.5, margin_ci_low=-0.1, reward_margin=0.0)],
        }
    }
    text = rate_markdown(sweep, smoke)
    assert f"sft: it picks {3 * t.lr:g} (70.0%)" in text
    assert "does not overlap the pick's" in text  # 60% vs 65% at the closest ends
    assert f"dpo: no rate learns; the profile uses {t.lr_for('dpo'):g}" in text
    sweep["methods"]["sft"][1] = row(3 * t.lr, 0.62)
    assert "overlaps the pick's" in rate_markdown(sweep, smoke)
    assert "No sweep" in rate_markdown(None, smoke)


def test_margin_text_states_each_replicate_and_the_verdict():
    from helpers.dpo_margin_view import margin_markdown
    from helpers.profiles import load_profile

    def s(low, high):
        return {**_summary(low, high), "pairs": 7, "reward_accuracy": 0.5}

    per_replicate = [
        {"dpo": {"gold": s(0.01, 0.03), "unused": None}},
        {"dpo": {"gold": s(-0.02, 0.01), "unused": None}},
    ]
    noise = [{"dpo": {"ratio": 3.0}}, {"dpo": {"ratio": 5.0}}]
    held = {"problems": 9, "pairs": 7, "base_accuracy": 2 / 9}
    text = margin_markdown(per_replicate, held, noise, load_profile("smoke"))
    assert (
        "replicate 0: +0.0200 [+0.0100, +0.0300] on 7 pairs; replicate 1: -0.0050 [-0.0200, +0.0100]" in text
    )
    assert f"**{INCONCLUSIVE}**" in text and "rollout pairs" not in text
    assert "3.0x to 5.0x the noise norm over 2 replicates" in text
    assert "On 9 fresh held-out problems the base answers 22.2% right; its 7 wrong answers" in text


def test_the_sweep_judges_dpo_by_its_gold_margin_where_measured():
    from helpers.lr_sweep import learns

    row = {"accuracy": 0.45, "ci_low": 0.37, "ci_high": 0.52, "base_accuracy": 0.47, "margin_ci_low": -0.09}
    assert not learns(row)  # the left-out rollout pairs alone: interval reaches 0
    assert learns({**row, "gold_margin_ci_low": 0.002})  # the better-resolved gold pairs clear 0
    assert not learns({**row, "margin_ci_low": 0.01, "gold_margin_ci_low": -0.001})
    assert not learns({**row, "gold_margin_ci_low": 0.002, "ci_high": 0.46})  # accuracy below the base's
