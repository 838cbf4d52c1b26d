"""The three held-out measures of mode connectivity: exactly the right tokens scored, log V for a
uniform model, and every measure with both barrier kinds in the chapter's report."""

import math

import pytest
import torch

from helpers.compare import connectivity_report
from helpers.connectivity import (
    CLAIM_MEASURE,
    MEASURES,
    SATURATED_NATS,
    STUDY_MEASURE,
    ConnectivityError,
    barrier,
    claim_measure,
    encode_problems,
    heldout_losses,
    mean_token_nll,
    measure_summary,
    no_barrier_reason,
    path_losses,
    reasoning_text,
)
from helpers.deltas import load_deltas
from helpers.prompting import build_completion, build_prompt
from tests.builders import make_adapter, make_model, make_tokenizer
from tests.unit.test_connectivity import PROBLEMS, tokenizer_for


def direct_answer_ce(model, tokenizer, problems):
    """CE of "#### N" after prompt + reasoning, one unpadded sequence per problem, in float64."""
    total, count = 0.0, 0
    for p in problems:
        reasoning = p["solution"].rsplit("####", 1)[0].strip()
        context = tokenizer(build_prompt(p["question"]), add_special_tokens=False)["input_ids"]
        context += tokenizer(" " + reasoning, add_special_tokens=False)["input_ids"]
        answer = tokenizer(f"#### {p['answer']}", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([context + answer])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        for i, tok in enumerate(answer):
            total -= float(logp[len(context) + i - 1, tok])
            count += 1
    return total / count, count


def test_answer_after_solution_scores_exactly_the_answer_tokens():
    tokenizer = tokenizer_for(PROBLEMS)
    model = make_model(len(tokenizer), tie_word_embeddings=False, seed=3)
    encoded = encode_problems(tokenizer, PROBLEMS)
    want, count = direct_answer_ce(model, tokenizer, PROBLEMS)
    assert count == 6  # "####" and the number, three problems
    rows = encoded["answer_ce_after_solution"]
    assert [sum(r["completion_mask"]) for r in rows] == [2, 2, 2]
    # padding in a batch of 3 and of 2 must not change it
    for batch_size in (1, 2, 3):
        assert mean_token_nll(model, rows, batch_size) == pytest.approx(want, rel=1e-5)
    # the worked solution really conditions the answer: not the same number as right after the prompt
    assert abs(mean_token_nll(model, encoded["answer_ce"]) - want) > 1e-3


def test_answer_span_on_byte_level_bpe_is_the_answer_text():
    """With the tiny models' byte-level BPE, the scored tokens spell the answer and nothing of the seam."""
    problems = [dict(p) for p in PROBLEMS]
    tokenizer = make_tokenizer()
    for row, p in zip(
        encode_problems(tokenizer, problems)["answer_ce_after_solution"], problems, strict=True
    ):
        scored = [t for t, m in zip(row["input_ids"], row["completion_mask"], strict=True) if m]
        first = row["completion_mask"].index(1)
        assert tokenizer.decode(scored) == f"#### {p['answer']}"
        assert tokenizer.decode(row["input_ids"][:first]).endswith(reasoning_text(p) + "\n")
        assert tokenizer.eos_token_id not in scored


def test_uniform_model_scores_log_vocab_on_every_measure():
    tokenizer = tokenizer_for(PROBLEMS)
    model = make_model(len(tokenizer), tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: a uniform next-token distribution
    losses = heldout_losses(model, encode_problems(tokenizer, PROBLEMS), batch_size=2)
    assert set(losses) == set(MEASURES)
    for measure, value in losses.items():
        assert value == pytest.approx(math.log(len(tokenizer)), rel=1e-6), measure


def test_reasoning_text_markers_and_errors():
    assert reasoning_text(PROBLEMS[0]) == "3 + 4 = 7 ."
    boxed = {"id": "b", "solution": "Half of 8 is 4. The answer is \\boxed{4}.", "answer": "4"}
    assert reasoning_text(boxed) == "Half of 8 is 4. The answer is"
    # the last marker counts, as helpers.data.extract_answer reads it
    assert reasoning_text({"id": "c", "solution": "a #### b\n#### 5"}) == "a #### b"
    with pytest.raises(ConnectivityError, match="no final answer"):
        reasoning_text({"id": "d", "solution": "5 apples"})


def test_answer_cut_by_max_length_is_left_out_of_that_measure_only():
    tokenizer = tokenizer_for(PROBLEMS)
    p = PROBLEMS[0]
    prompt = len(tokenizer(build_prompt(p["question"]), add_special_tokens=False)["input_ids"])
    solution = len(tokenizer(build_completion(p["solution"]), add_special_tokens=False)["input_ids"])
    encoded = encode_problems(tokenizer, [p], max_length=prompt + solution - 1)  # the answer's last token cut
    assert len(encoded["answer_ce"]) == 1 and len(encoded["solution_nll"]) == 1
    assert encoded["answer_ce_after_solution"] == []
    assert len(encode_problems(tokenizer, [p], max_length=prompt + solution)["answer_ce_after_solution"]) == 1


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory):
    tokenizer = tokenizer_for(PROBLEMS)
    root = tmp_path_factory.mktemp("measure_adapters")
    deltas = {}
    for name, seed in (("a", 1), ("b", 2)):
        base = make_model(len(tokenizer), tie_word_embeddings=False)
        make_adapter(base, seed=seed, scale=0.5).save_pretrained(root / name)
        deltas[name] = load_deltas(root / name)
    return tokenizer, deltas


def test_path_and_report_carry_every_measure_with_both_barriers(two_adapters):
    tokenizer, deltas = two_adapters
    model = make_model(len(tokenizer), tie_word_embeddings=False)
    curve = path_losses(model, tokenizer, deltas["a"], deltas["b"], PROBLEMS, [0.0, 0.5, 1.0], batch_size=3)
    assert set(curve) == {"ts", *MEASURES}
    report = connectivity_report(model, tokenizer, deltas, ["a-b"], PROBLEMS, points=3, batch_size=3)
    for key, kind in (("barrier", "chord"), ("barrier_endpoint_mean", "endpoint_mean")):
        assert set(report[key]) == set(MEASURES)
        for measure in MEASURES:
            path = report["paths"]["a-b"]
            assert path[measure] == pytest.approx(curve[measure], rel=1e-6)
            assert report[key][measure]["a-b"] == barrier(path["ts"], path[measure], kind=kind)
    assert set(report["rays"]["a"]) == {"ts", *MEASURES}


def test_measure_summary_flags_off_distribution_and_saturated():
    ts = [0.0, 0.5, 1.0]
    curve = {"ts": ts, "answer_ce": [9.0, 9.5, 8.0], "answer_ce_after_solution": [0.002, 0.003, 0.02]}
    curve["solution_nll"] = [0.15, 0.08, 0.02]
    lmc = {
        "rays": {
            "sft": {"ts": ts, "answer_ce": [11.0, 10.0, 9.0], "answer_ce_after_solution": [0.001, 0.0, 0.002]}
        },
        "paths": {"sft-grpo": curve},
    }
    lmc["rays"]["sft"]["solution_nll"] = [0.02, 0.05, 0.15]
    summary = measure_summary(lmc, vocab_size=512)
    assert set(summary) == set(MEASURES)
    assert summary["answer_ce"]["off_distribution"] and not summary["solution_nll"]["off_distribution"]
    assert summary["answer_ce"]["base"] == 11.0 and summary["answer_ce"]["log_vocab"] == pytest.approx(
        math.log(512)
    )
    # one endpoint (0.02) above SATURATED_NATS: not saturated, though the base and the ray are
    assert not summary["answer_ce_after_solution"]["saturated"]
    curve["answer_ce_after_solution"][-1] = SATURATED_NATS / 2
    assert measure_summary(lmc, 512)["answer_ce_after_solution"]["saturated"]
    assert summary["answer_ce"]["largest_chord_barrier"] == pytest.approx(9.5 - 8.5)
    # the curve lies below its chord: no rise beyond rounding
    assert summary["solution_nll"]["largest_chord_barrier"] == pytest.approx(0.0, abs=1e-12)
    assert summary["solution_nll"]["adapters_min"] == summary["solution_nll"]["adapters_max"] == 0.15
    with pytest.raises(ConnectivityError, match="rays"):
        measure_summary({"rays": {}, "paths": lmc["paths"]}, 512)


def test_claim_measure_per_profile():
    from helpers.profiles import load_profile

    assert claim_measure(load_profile("tiny")) == CLAIM_MEASURE == "solution_nll"
    assert claim_measure(load_profile("smoke")) == CLAIM_MEASURE
    assert claim_measure(load_profile("paper")) == STUDY_MEASURE == "answer_ce"
    assert "chord" in no_barrier_reason()


def test_answer_after_solution_shares_the_solution_pass():
    """The gold solution ends in the answer: its rows hold the solution's tokens, and one forward
    pass per batch scores both measures, with the numbers separate passes give."""
    tokenizer = tokenizer_for(PROBLEMS)
    model = make_model(len(tokenizer), tie_word_embeddings=False, seed=5)
    encoded = encode_problems(tokenizer, PROBLEMS)
    shared, solution = encoded["answer_ce_after_solution"], encoded["solution_nll"]
    assert [r["input_ids"] for r in shared] == [r["input_ids"] for r in solution]
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    losses = heldout_losses(model, encoded, batch_size=3)
    handle.remove()
    assert len(calls) == 2  # the answer rows, then solution and answer-after-solution together
    for measure in MEASURES:
        assert losses[measure] == pytest.approx(mean_token_nll(model, encoded[measure], 3), rel=1e-6)
    assert losses["answer_ce_after_solution"] == pytest.approx(
        direct_answer_ce(model, tokenizer, PROBLEMS)[0], rel=1e-5
    )
