"""Loss along straight lines between adapters: endpoints equal PEFT's own adapters, weights restored."""

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

# Held-out losses are per-token means of ~3.5 nats from float32 forward passes. PEFT adds the
# update as x A^T B^T beside x W^T while `merged` rounds W + dW to float32 once, and batches of
# other sizes pad differently: either moves the logits by a few ulps, the loss by ~ulps of 4.
LOSS_TOL = 64 * torch.finfo(torch.float32).eps * 4
# The barrier's chord and maxima are a few float64 operations on losses of ~1-10.
BARRIER_TOL = 1e-12

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
        assert curve["answer_ce"][t] == pytest.approx(want["answer_ce"], abs=LOSS_TOL)
        assert curve["solution_nll"][t] == pytest.approx(want["solution_nll"], abs=LOSS_TOL)
    base = heldout_losses(model, encode_problems(tokenizer, PROBLEMS), batch_size=2)
    assert abs(curve["answer_ce"][0] - base["answer_ce"]) > 100 * LOSS_TOL  # the adapters change the loss
    # the midpoint is the average update, which PEFT cannot express: check it against a dense merge
    merged = base_model(vocab)
    with torch.no_grad():
        for name, delta in a.items():
            w = merged.get_submodule(name).weight
            w.copy_((w.double() + 0.5 * delta.dense() + 0.5 * b[name].dense()).float())
    mid = heldout_losses(merged, encode_problems(tokenizer, PROBLEMS), batch_size=3)
    assert curve["answer_ce"][1] == pytest.approx(mid["answer_ce"], abs=LOSS_TOL)
    assert min(abs(curve["answer_ce"][1] - curve["answer_ce"][t]) for t in (0, 2)) > 100 * LOSS_TOL


def test_ray_starts_at_base(setup):
    tokenizer, vocab, paths = setup
    model = base_model(vocab)
    before = snapshot(model)
    a = load_deltas(paths["a"])
    ray = ray_losses(model, tokenizer, a, PROBLEMS, ts=[0.0, 1.0], batch_size=3)
    base = heldout_losses(model, encode_problems(tokenizer, PROBLEMS), batch_size=3)
    assert ray["answer_ce"][0] == base["answer_ce"] and ray["solution_nll"][0] == base["solution_nll"]
    assert ray["answer_ce"][1] == pytest.approx(
        peft_losses(paths["a"], vocab, tokenizer)["answer_ce"], abs=LOSS_TOL
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
    assert mean_token_nll(model, encoded["answer_ce"], batch_size=3) == pytest.approx(
        total / count, abs=LOSS_TOL
    )
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
    assert barrier(ts, line) == pytest.approx(0.0, abs=BARRIER_TOL)
    assert barrier(ts, line + 0.7 * np.sin(np.pi * ts)) == pytest.approx(
        0.7, abs=BARRIER_TOL
    )  # peak at t = 0.5
    assert barrier(ts, line - 0.4 * np.sin(np.pi * ts)) == 0.0  # a dip is no barrier
    assert barrier([0.0, 0.5, 1.0], [1.0, 4.0, 3.0]) == pytest.approx(2.0, abs=BARRIER_TOL)  # 4 - (1 + 3) / 2
    with pytest.raises(ConnectivityError):
        barrier([0.0], [1.0])
    # a flat line, on ts that do not start at 0: the chord is the line itself, exactly
    assert barrier([0.2, 0.6], [1.0, 1.0]) == 0.0
    assert barrier([0.2, 0.6], [1.0, 1.0], kind="endpoint_mean") == 0.0


def tent(ts, centre, width):
    """1 at `centre`, falling linearly to 0 at `centre` +- `width`, 0 beyond (so the endpoints stay put)."""
    return np.clip(1.0 - np.abs(ts - centre) / width, 0.0, None)


def test_barrier_off_centre_bump_and_offset_ts():
    # the bump peaks at t = 0.2 (a grid point) on ts from 0.1 to 0.9: the chord there is 1 + 2 * 0.2
    ts = np.round(np.linspace(0.1, 0.9, 17), 12)
    chord = 1.0 + 2.0 * ts
    losses = chord + 2.0 * tent(ts, 0.2, 0.1)
    assert barrier(ts, losses) == pytest.approx(2.0, abs=BARRIER_TOL)
    # Frankle et al.: the largest loss (1.4 + 2.0 at t = 0.2) minus the mean of the endpoint losses (1.2, 2.8)
    assert barrier(ts, losses, kind="endpoint_mean") == pytest.approx(3.4 - 2.0, abs=BARRIER_TOL)
    # a straight line on offset ts: no barrier (a chord through t = 0 instead of t[0] would see one)
    assert barrier(ts, chord) == pytest.approx(0.0, abs=BARRIER_TOL)


def test_barrier_sorts_by_t():
    ts = np.round(np.linspace(0.0, 1.0, 11), 12)
    losses = 2.0 + 3.0 * ts + 0.5 * tent(ts, 0.7, 0.2)
    order = np.random.default_rng(0).permutation(len(ts))
    assert order[0] != 0 and order[-1] != len(ts) - 1  # the endpoints are not first and last
    for kind in ("chord", "endpoint_mean"):
        want = barrier(ts, losses, kind=kind)
        assert barrier(ts[order], losses[order], kind=kind) == pytest.approx(want, abs=BARRIER_TOL)
        assert barrier(list(ts[::-1]), list(losses[::-1]), kind=kind) == pytest.approx(want, abs=BARRIER_TOL)
    assert barrier(ts[order], losses[order]) == pytest.approx(0.5, abs=BARRIER_TOL)
    with pytest.raises(ConnectivityError, match="distinct"):
        barrier([0.0, 0.5, 0.5, 1.0], [1.0, 2.0, 3.0, 1.0])


def test_barrier_kinds_on_the_study_rift_to_dpo_values():
    # STUDY.md: answer CE 3.82 (RIFT, t = 0), 7.06 (t = 0.5), 8.64 (DPO, t = 1)
    ts, losses = [0.0, 0.5, 1.0], [3.82, 7.06, 8.64]
    assert barrier(ts, losses) == pytest.approx(0.83, abs=BARRIER_TOL)  # 7.06 - (3.82 + 8.64) / 2
    assert barrier(ts, losses, kind="chord") == barrier(ts, losses)
    assert barrier(ts, losses, kind="endpoint_mean") == pytest.approx(2.41, abs=BARRIER_TOL)  # 8.64 - 6.23
    with pytest.raises(ValueError, match="kind must be one of chord, endpoint_mean"):
        barrier(ts, losses, kind="frankle")
