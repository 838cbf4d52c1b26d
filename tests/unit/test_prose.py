"""helpers.prose: the sentences the book writes from its results say what the numbers say."""

import math
import types

import pytest
import torch

from helpers import prose
from helpers.deltas import LowRankDelta
from helpers.plots_tutorial import lora_diagram, lora_layout


def test_number_formats():
    assert prose.num(1319) == "1,319" and prose.num(28896.0) == "28,896"
    assert prose.num(0.04913676) == "0.0491" and prose.num(None) == "n/a" and prose.num(float("nan")) == "n/a"
    assert prose.pct(0.41666) == "42%" and prose.pct(1.0, 1) == "100.0%"
    s = {"mean": 0.5, "min": 0.25, "max": 0.75, "n": 2}
    assert prose.spread(s) == "0.5 (0.25 to 0.75 over 2 replicates)"
    assert prose.spread({"mean": 0.5, "min": 0.5, "max": 0.5, "n": 3}) == "0.5 in each of 3 replicates"
    assert (
        prose.brackets(s) == "0.5 [0.25, 0.75]"
        and prose.brackets({"mean": 2, "min": 2, "max": 2, "n": 2}) == "2"
    )


def test_study_text_reads_the_entry():
    study = {
        "a.b": {"kind": "approx", "value": 0.74, "unit": "cosine"},
        "c": {"kind": "range", "value": [0.79, 0.86], "unit": "fraction"},
    }
    assert prose.study_text("a.b", study) == "about 0.74"
    assert prose.study_text("c", study) == "0.79 to 0.86"
    assert prose.study_glue_key("a.b") == "study_a_b"
    with pytest.raises(KeyError, match="no entry 'missing'"):
        prose.study_text("missing", study)
    # the real file: the study's K, as the book quotes it
    assert prose.study_text("setup.k_rollouts") == "4"


def _rollout(pid, reward, text):
    return {
        "prompt_id": pid,
        "question": f"question {pid}",
        "reference": "7",
        "reward": reward,
        "completion": text,
    }


def test_rollout_pair_shows_a_right_and_a_wrong_rollout_of_one_mixed_prompt_in_full():
    rollouts = [
        _rollout(0, 1.0, "all right\n#### 7"),
        _rollout(0, 1.0, "also right\n#### 7"),
        _rollout(1, 0.0, "slip\n#### 6"),
        _rollout(1, 1.0, "step one\nstep two\n#### 7"),
    ]
    assert prose.pick_mixed_prompt(rollouts, prefer=0) == 1  # prompt 0 is all right: not a pair
    text = prose.rollout_pair(rollouts, prefer=0)
    assert "question 1" in text and "question 0" not in text
    assert "step one\nstep two\n#### 7" in text and "slip\n#### 6" in text
    assert (
        text.index("A right rollout")
        < text.index("step one")
        < text.index("A wrong rollout")
        < text.index("slip")
    )
    assert prose.rollout_pair(rollouts[:2]).startswith("No prompt has both")


def test_schedule_point_matches_the_cosine_formula():
    # transformers' cosine schedule with linear warmup, written out: the study's step 1,000 of 1,500.
    p = prose.schedule_point(1500, 1000, "cosine", 0.05)
    warmup = math.ceil(0.05 * 1500)
    expected = 0.5 * (1 + math.cos(math.pi * (1000 - warmup) / (1500 - warmup)))
    assert p["rate"] == pytest.approx(expected, rel=1e-9) and p["share"] == pytest.approx(2 / 3)
    assert prose.schedule_point(100, 100, "cosine", 0.05)["rate"] == pytest.approx(0.0, abs=1e-12)
    assert prose.schedule_point(100, 2, "cosine", 0.05)["rate"] == pytest.approx(2 / 5)  # inside the warmup


def test_step_mapping_places_both_result_steps():
    train = types.SimpleNamespace(
        steps=100,
        result_step=100,
        scheduler="cosine",
        warmup_ratio=0.05,
        kept_steps=lambda: [25, 50, 75, 100],
    )
    study = {
        "setup.steps": {"kind": "value", "value": 1500.0, "unit": "steps"},
        "setup.result_step": {"kind": "value", "value": 1000.0, "unit": "steps"},
    }
    text = prose.step_mapping(train, study)
    assert "step 1,000 of 1,500 (67% of the run, the rate at 27% of its peak)" in text
    assert "step 100 of 100 (100% of the run, the rate at 0% of its peak)" in text
    assert "not the same point of the schedule" in text
    train.steps, train.result_step = 150, 100
    assert "the same point of the schedule" in prose.step_mapping(train, study)


def _ranks(values):
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


def _spearman(x, y):
    """Spearman's rho without ties: 1 - 6 sum d^2 / (n (n^2 - 1))."""
    n = len(x)
    d2 = sum((a - b) ** 2 for a, b in zip(_ranks(x), _ranks(y), strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


def test_size_vs_score_rank_correlation_per_replicate():
    methods = ["sft", "rft", "dpo", "grpo"]
    norms = [{"sft": 3.0, "rft": 2.0, "dpo": 0.2, "grpo": 1.0, "sft_order": 9.0}] * 2
    accuracy = [
        {"sft": 0.5, "rft": 0.4, "dpo": 0.1, "grpo": 0.3, "sft_order": 0.0},
        {"sft": 0.5, "rft": 0.3, "dpo": 0.1, "grpo": 0.4, "sft_order": 0.0},
    ]
    out = prose.size_vs_score(norms, accuracy, methods)
    x = [3.0, 2.0, 0.2, 1.0]
    assert out["rho"][0] == pytest.approx(_spearman(x, [0.5, 0.4, 0.1, 0.3]))
    assert out["rho"][1] == pytest.approx(_spearman(x, [0.5, 0.3, 0.1, 0.4]))
    assert out["verdict"] == "larger updates score higher"
    assert out["summary"]["min"] == min(out["rho"]) and out["summary"]["n"] == 2
    flipped = prose.size_vs_score(norms, [accuracy[0], {m: -v for m, v in accuracy[1].items()}], methods)
    assert flipped["verdict"] == "inconclusive" and "inconclusive" in prose.size_vs_score_markdown(flipped)
    lower = prose.size_vs_score(norms, [{m: -v for m, v in a.items()} for a in accuracy], methods)
    assert lower["verdict"] == "larger updates score lower"
    tied = prose.size_vs_score(norms, [dict.fromkeys(methods, 0.0)] * 2, methods)
    assert tied["rho"] == [None, None] and tied["verdict"] == "not measurable"
    assert "Not measurable" in prose.size_vs_score_markdown(tied)


def test_completions_show_the_first_problem_the_models_disagree_on():
    def rows(correct):
        return {
            "rows": [
                {
                    "id": i,
                    "question": f"q{i}",
                    "reference": "1",
                    "completion": f"answer {i} {c}",
                    "correct": c,
                }
                for i, c in enumerate(correct)
            ]
        }

    evaluation = {"base": rows([False, False, True]), "sft": rows([False, True, True])}
    text = prose.completions_markdown(evaluation)
    assert "**Problem 1.** q1" in text and "answer 1 True" in text and "answer 1 False" in text
    assert "*base* (wrong)" in text and "*sft* (right)" in text
    assert "**Problem 2.**" in prose.completions_markdown(evaluation, index=2)


def test_summaries_state_the_results_numbers():
    out = {
        "n_train": 24,
        "n_eval": 16,
        "train_eval_overlap": 0,
        "steps_histogram": {"2": 11, "3": 13},
        "gsm8k_test_n": 1319,
        "gsm8k_checker_agreement": 1.0,
    }
    text = prose.problems_summary(out)
    assert "24 training prompts and 16 held-out problems" in text and "13 with 3 steps" in text
    assert "100.0% of its 1,319" in text


def _deltas(layers=3, projections=("q_proj", "k_proj", "v_proj", "o_proj"), d_out=8, d_in=12, r=2):
    g = torch.Generator().manual_seed(0)
    return {
        f"model.layers.{i}.self_attn.{p}": LowRankDelta(
            torch.randn(d_out, r, generator=g), torch.randn(r, d_in, generator=g), 2.0
        )
        for i in range(layers)
        for p in projections
    }


def test_lora_layout_and_diagram_from_an_adapters_shapes():
    lay = lora_layout(_deltas())
    assert lay["modules"] == 12 and lay["layers"] == 3 and len(lay["projections"]) == 4
    assert (lay["d_out"], lay["d_in"], lay["r"]) == (8, 12, 2)
    fig = lora_diagram(_deltas(), 2.0)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts) + fig.axes[0].get_title()
    assert (
        "B\n8 x 2" in texts and "A\n2 x 12" in texts and "12 such modules = 3 layers x 4 projections" in texts
    )
    assert "r(d_in + d_out) = 40" in texts
    with pytest.raises(ValueError, match="at least one module"):
        lora_layout({})


def test_dpo_learning_lines_say_each_runs_verdict_per_pairs_set():
    lines = prose.dpo_learning_lines(
        {"dpo": {"gold": "learns", "unused": "inconclusive"}, "dpo_samelr": {"gold": None, "unused": None}}
    )
    assert lines == [
        "Does dpo learn? Held-out reward margin, gold solution over the base's wrong answer: learns; "
        "rollout pairs its cap left out: inconclusive."
    ]
