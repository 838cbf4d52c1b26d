"""Loss along straight lines between adapters: endpoints equal PEFT's own adapters, weights restored."""

import math

import numpy as np
import pytest
import torch

from helpers.connectivity import (
    ConnectivityError,
    answer_text,
    barrier,
    encode_problems,
    heldout_losses,
    interpolate,
    mean_token_nll,
    path_losses,
    ray_losses,
)
from helpers.deltas import load_deltas
from helpers.prompting import build_completion, build_prompt
from tests.builders import make_adapter, make_model, make_tokenizer

PROBLEMS = [
    {
        "id": "p0",
        "question": "Tom has 3 apples and buys 4 more . How many ?",
        "solution": "3 + 4 = 7 .\n#### 7",
        "answer": "7",
    },
    {
        "id": "p1",
        "question": "Mia has 5 pens and gives 2 away . How many ?",
        "solution": "5 - 2 = 3 .\n#### 3",
        "answer": "3",
    },
    {
        "id": "p2",
        "question": "Ben has 2 bags of 6 . How many ?",
        "solution": "2 * 6 = 12 .\n#### 12",
        "answer": "12",
    },
]


def tokenizer_for(problems):
    """A word-level tokenizer whose vocabulary covers every prompt and completion."""
    texts = [
        text
        for p in problems
        for text in (build_prompt(p["question"]), build_completion(p["solution"]), f"#### {p['answer']}")
    ]
    return make_tokenizer(texts=texts, word_level=True)


def base_model(vocab_size):
    return make_model(vocab_size, tie_word_embeddings=False)


def save_adapter(path, vocab_size, seed):
    make_adapter(base_model(vocab_size), seed=seed, scale=0.5).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tokenizer = tokenizer_for(PROBLEMS)
    root = tmp_path_factory.mktemp("adapters")
    vocab = len(tokenizer)
    paths = {name: save_adapter(root / name, vocab, seed) for name, seed in (("a", 1), ("b", 2))}
    return tokenizer, vocab, paths


def peft_losses(path, vocab, tokenizer, **kw):
    from peft import PeftModel

    model = PeftModel.from_pretrained(base_model(vocab), str(path)).eval()
    return heldout_losses(model, encode_problems(tokenizer, PROBLEMS, **kw), batch_size=2)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_identical(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_endpoints_match_peft_and_weights_restored(setup):
    tokenizer, vocab, paths = setup
    model = base_model(vocab)
    before = snapshot(model)
    a, b = load_deltas(paths["a"]), load_deltas(paths["b"])
    curve = path_losses(model, tokenizer, a, b, PROBLEMS, ts=[0.0, 0.5, 1.0], batch_size=2)
    assert_identical(model, before)
    assert curve["ts"] == [0.0, 0.5, 1.0]
    for t, name in ((0, "a"), (-1, "b")):
        want = peft_losses(paths[name], vocab, tokenizer)
        assert curve["answer_ce"][t] == pytest.approx(want["answer_ce"], abs=1e-5)
        assert curve["solution_nll"][t] == pytest.approx(want["solution_nll"], abs=1e-5)
    base = heldout_losses(model, encode_problems(tokenizer, PROBLEMS), batch_size=2)
    assert abs(curve["answer_ce"][0] - base["answer_ce"]) > 1e-3  # the adapters really change the loss
    # the midpoint is the average update, which PEFT cannot express: check it against a dense merge
    merged = base_model(vocab)
    with torch.no_grad():
        for name, delta in a.items():
            w = merged.get_submodule(name).weight
            w.copy_((w.double() + 0.5 * delta.dense() + 0.5 * b[name].dense()).float())
    mid = heldout_losses(merged, encode_problems(tokenizer, PROBLEMS), batch_size=3)
    assert curve["answer_ce"][1] == pytest.approx(mid["answer_ce"], abs=1e-6)


def test_ray_starts_at_base(setup):
    tokenizer, vocab, paths = setup
    model = base_model(vocab)
    before = snapshot(model)
    a = load_deltas(paths["a"])
    ray = ray_losses(model, tokenizer, a, PROBLEMS, ts=[0.0, 1.0], batch_size=3)
    base = heldout_losses(model, encode_problems(tokenizer, PROBLEMS), batch_size=3)
    assert ray["answer_ce"][0] == base["answer_ce"] and ray["solution_nll"][0] == base["solution_nll"]
    assert ray["answer_ce"][1] == pytest.approx(
        peft_losses(paths["a"], vocab, tokenizer)["answer_ce"], abs=1e-5
    )
    assert_identical(model, before)


def test_interpolate_restores_after_error(setup):
    tokenizer, vocab, paths = setup
    model = base_model(vocab)
    before = snapshot(model)
    a = load_deltas(paths["a"])
    name = next(iter(a))
    with pytest.raises(RuntimeError, match="boom"), interpolate(model, a, 0.3):
        assert not torch.equal(model.get_submodule(name).weight, before[f"{name}.weight"])
        raise RuntimeError("boom")
    assert_identical(model, before)


def test_bad_deltas(setup):
    tokenizer, vocab, paths = setup
    model = base_model(vocab)
    a = load_deltas(paths["a"])
    renamed = {f"base_model.model.{k}": v for k, v in a.items()}
    with pytest.raises(ConnectivityError, match="no module"):
        with interpolate(model, renamed, 1.0):
            pass
    from helpers.deltas import LowRankDelta

    wrong = {next(iter(a)): LowRankDelta(torch.zeros(3, 1), torch.zeros(1, 5))}
    with pytest.raises(ConnectivityError, match="does not fit"):
        with interpolate(model, wrong, 1.0):
            pass


def test_loss_is_per_token_over_answer_only(setup):
    tokenizer, vocab, _ = setup
    model = base_model(vocab)
    encoded = encode_problems(tokenizer, PROBLEMS)
    total, count = 0.0, 0
    for p in PROBLEMS:  # one problem at a time, no padding: CE of the answer tokens " #### N"
        prompt_ids = tokenizer(build_prompt(p["question"]), add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(f" #### {p['answer']}", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        for i, tok in enumerate(answer_ids):
            total -= float(logp[len(prompt_ids) + i - 1, tok])
            count += 1
    assert count == 6
    assert mean_token_nll(model, encoded["answer_ce"], batch_size=3) == pytest.approx(total / count, rel=1e-5)
    assert sum(sum(r["completion_mask"]) for r in encoded["solution_nll"]) > count  # solution + EOS is longer


def test_answer_text_formats(setup):
    tokenizer, _, _ = setup
    assert answer_text(PROBLEMS[2], tokenizer) == "#### 12"

    class Chat:
        chat_template = "{{ messages }}"

    assert answer_text(PROBLEMS[2], Chat()) == "\\boxed{12}"
    with pytest.raises(ConnectivityError, match="answer"):
        answer_text({"id": "x", "question": "q"}, tokenizer)


def test_barrier():
    ts = np.linspace(0.0, 1.0, 11)
    line = 2.0 + 3.0 * ts
    assert barrier(ts, line) == pytest.approx(0.0, abs=1e-12)
    assert barrier(ts, line + 0.7 * np.sin(np.pi * ts)) == pytest.approx(0.7)  # peak at t = 0.5
    assert barrier(ts, line - 0.4 * np.sin(np.pi * ts)) == 0.0  # a dip is no barrier
    assert barrier([0.0, 0.5, 1.0], [1.0, 4.0, 3.0]) == pytest.approx(2.0)  # 4 - (1 + 3) / 2
    with pytest.raises(ConnectivityError):
        barrier([0.0], [1.0])
    assert not math.isnan(barrier([0.2, 0.6], [1.0, 1.0]))
