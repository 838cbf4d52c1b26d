"""Rollouts: sampling is seeded and its log-probabilities are right; grading; bad files fail clearly."""

import copy
import json

import pytest
import torch

from helpers.problems import generate_problems, problem_corpus
from helpers.profiles import load_profile
from helpers.prompting import build_prompt
from helpers.rollouts import (
    RolloutError,
    grade,
    oracle_completions,
    prompts_for,
    read_rollouts,
    sample_completions,
    summarize,
    write_rollouts,
)
from helpers.tiny_model import build_model, train_tokenizer


@pytest.fixture(scope="module")
def tiny():
    problems = generate_problems(6, seed=5)
    tok = train_tokenizer(problem_corpus(generate_problems(100, seed=1)), vocab_size=300)
    model = build_model(load_profile("smoke").model, len(tok), seed=0).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    return problems, tok, model


def test_sampling_is_seeded_and_logps_match_teacher_forcing(tiny):
    problems, tok, model = tiny
    prompts = prompts_for(problems[:2], tok)
    sampling = dict(k=3, temperature=1.0, top_p=1.0, max_new_tokens=12, batch_size=4, seed=7)
    a = sample_completions(model, tok, prompts, **sampling)
    b = sample_completions(model, tok, prompts, **sampling)
    assert a == b and len(a) == 6
    # The stored logp is the model's own log-probability of the sampled tokens, padding or not.
    samples = sample_completions(model, tok, prompts, **sampling, return_ids=True)
    for index in (0, 5):
        _, logp, new_ids = samples[index]
        prompt_ids = tok(prompts[index // 3], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + new_ids])
        with torch.no_grad():
            logits = model(ids).logits.log_softmax(-1)[0, len(prompt_ids) - 1 : -1]
        expected = logits.gather(-1, torch.tensor(new_ids)[:, None]).sum()
        assert logp == pytest.approx(float(expected), abs=1e-3)


def _teacher_forced_logp(model, tok, prompt, new_ids):
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + new_ids])).logits.log_softmax(-1)[
            0, len(prompt_ids) - 1 : -1
        ]
    return float(logits.gather(-1, torch.tensor(new_ids)[:, None]).sum())


def test_rows_leave_the_batch_at_eos_and_match_hf_generate(tiny):
    problems, tok, model = tiny
    tok, model = copy.deepcopy(tok), copy.deepcopy(model)
    with torch.no_grad():  # a fresh tiny model repeats one token; noise makes each row its own
        gen = torch.Generator().manual_seed(0)
        for param in model.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen))
    prompts = prompts_for(problems, tok)  # six prompts of different lengths: left padding
    free = sample_completions(model, tok, prompts, 1, 0.0, 1.0, 16, 6, seed=0, return_ids=True)
    # Make a token that some rows write early (and others later or never) the EOS, so rows
    # leave the batch at different steps.
    stop = free[0][2][3]
    assert any(stop not in ids[:4] for _, _, ids in free)
    tok.eos_token = tok.convert_ids_to_tokens(stop)
    mine = sample_completions(model, tok, prompts, 1, 0.0, 1.0, 16, 6, seed=0, return_ids=True)
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    hf = model.generate(
        **enc, do_sample=False, max_new_tokens=16, eos_token_id=stop, pad_token_id=tok.pad_token_id
    )
    lengths = set()
    for prompt, (_, logp, ids), row in zip(
        prompts, mine, hf[:, enc["input_ids"].shape[1] :].tolist(), strict=True
    ):
        expected = row[: row.index(stop) + 1] if stop in row else row
        assert ids == expected
        assert logp == pytest.approx(_teacher_forced_logp(model, tok, prompt, ids), abs=1e-3)
        lengths.add(len(ids))
    assert len(lengths) > 1  # rows did leave at different steps
    # A nucleus too small for any second token is greedy decoding.
    nucleus = sample_completions(model, tok, prompts, 1, 1.0, 1e-6, 16, 6, seed=3, return_ids=True)
    assert [ids for _, _, ids in nucleus] == [ids for _, _, ids in mine]


def test_grading_and_summary_counts():
    problems = generate_problems(3, seed=2)
    prompts = [build_prompt(p["question"]) for p in problems]
    wrong = "It is #### 100000"
    samples = [
        (problems[0]["solution"], -1.0),
        (wrong, -2.0),  # mixed group: one pair
        (problems[1]["solution"], -1.0),
        (problems[1]["solution"], -1.0),  # all right
        (wrong, -3.0),
        (wrong, -3.0),
    ]  # all wrong
    records = grade(problems, prompts, samples, k=2)
    assert [r["reward"] for r in records] == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert records[2]["prompt_id"] == 1 and records[2]["prompt"] == prompts[1]
    s = summarize(records)
    assert s["mixed_groups"] == 1 and s["dpo_pairs"] == 1
    assert s["reward_mean"] == pytest.approx(0.5)
    assert s["correct_per_group"] == {"0": 1, "1": 1, "2": 1}
    assert s["all_correct_share"] == pytest.approx(1 / 3)
    # Groups 1 and 2 hold two copies each: 4 distinct texts in 6 rollouts.
    assert s["unique_completions"] == 4 and s["unique_share"] == pytest.approx(4 / 6)
    assert s["identical_groups"] == 2 and s["distinct_dpo_pairs"] == 1


def test_diversity_counts_distinct_texts_within_a_prompt():
    problems = generate_problems(2, seed=2)
    right, wrong = problems[0]["solution"], "It is #### 100000"
    other_right = "Some other way.\n#### " + problems[0]["answer"]
    samples = [(right, None), (right, None), (other_right, None), (wrong, None)]
    samples += [(wrong, None), (wrong + "!", None), (wrong, None), (wrong, None)]  # group 2: all wrong
    s = summarize(grade(problems, ["", ""], samples, k=4))
    assert s["unique_completions"] == 3 + 2 and s["unique_share"] == pytest.approx(5 / 8)
    assert s["dpo_pairs"] == 3 and s["distinct_dpo_pairs"] == 2  # the two copies of `right` pair once
    assert s["identical_groups"] == 0 and s["mixed_groups"] == 1
    # The same text under two prompts is two unique rollouts: diversity is within a group.
    twice = summarize(grade(problems, ["", ""], [(wrong, None)] * 8, k=4))
    assert twice["unique_completions"] == 2 and twice["identical_groups"] == 2


def test_oracle_teacher_is_wrong_at_its_rate():
    problems = generate_problems(200, seed=4)
    samples = oracle_completions(problems, k=4, error_rate=0.3, seed=0)
    records = grade(problems, [""] * len(problems), samples, k=4)
    wrong = 1 - summarize(records)["reward_mean"]
    assert 0.22 < wrong < 0.38
    assert all(r["completion"].rstrip().split("\n")[-1].startswith("####") for r in records)


def test_rollouts_file_round_trip_and_errors(tmp_path):
    records = [{"prompt_id": 0, "prompt": "p", "completion": "#### 1", "reward": 1.0}]
    path = write_rollouts(records, tmp_path / "r.jsonl")
    assert read_rollouts(path)[0]["correct"] is True

    no_reward = tmp_path / "no_reward.jsonl"
    no_reward.write_text(json.dumps({"prompt_id": 0, "prompt": "p", "completion": "c"}) + "\n")
    with pytest.raises(RolloutError, match=r"no_reward.jsonl:1: missing field\(s\) reward.*graded"):
        read_rollouts(no_reward)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_id": 0, "prompt": "p", "completion": "c", "reward": 1}\n{oops\n')
    with pytest.raises(RolloutError, match="bad.jsonl:2: not valid JSON"):
        read_rollouts(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(RolloutError, match="no rollouts"):
        read_rollouts(empty)
    with pytest.raises(RolloutError, match="does not exist"):
        read_rollouts(tmp_path / "missing.jsonl")
