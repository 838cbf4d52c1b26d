"""Linear CKA against textbook HSIC, its invariances, and pooled hidden states of a tiny Qwen3."""

import itertools

import numpy as np
import pytest
import torch

from helpers.cka import CKAError, cka_by_layer, hidden_states, linear_cka
from tests.builders import make_model, make_tokenizer

EPS = float(np.finfo(np.float64).eps)


def cka_tol(n: int) -> float:
    """CKA is a cosine of two centred Gram matrices, each entry a sum over the features and the
    n inputs: float64 rounding moves it by ~n eps (observed: under 10 eps here)."""
    return 100 * n * EPS


def hsic_biased(K, L):
    """Gretton et al. (2005): tr(K H L H) / (n - 1)^2 with the centring matrix H."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def hsic_unbiased_ustat(K, L):
    """Song et al. (2012) as a U-statistic: the mean over ordered distinct (i, j, q, r) of
    k_ij l_ij + k_ij l_qr - 2 k_ij l_iq. Slow (n^4), so for tiny n only."""
    n = K.shape[0]
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
        count += 1
    return total / count


def reference_cka(X, Y, hsic):
    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def features(n=30, d1=12, d2=9, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d1))
    Y = X[:, :d2] @ rng.normal(size=(d2, d2)) + 0.7 * rng.normal(size=(n, d2)) + 3.0  # related, offset
    return X, Y


@pytest.mark.parametrize("n,d1,d2", [(30, 12, 9), (10, 25, 40)])  # feature-space and Gram-space branches
def test_biased_matches_reference(n, d1, d2):
    X, Y = features(n, d1, d2 if d2 <= d1 else d1, seed=1)
    if d2 > d1:
        Y = np.hstack([Y, np.random.default_rng(2).normal(size=(n, d2 - d1))])
    assert linear_cka(X, Y) == pytest.approx(reference_cka(X, Y, hsic_biased), rel=0, abs=cka_tol(n))


def test_debiased_matches_u_statistic():
    X, Y = features(n=8, d1=5, d2=4, seed=3)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    want = reference_cka(Xc, Yc, hsic_unbiased_ustat)
    # the unbiased HSIC subtracts terms of similar size; at n = 8 that costs a few digits at most
    assert linear_cka(X, Y, debiased=True) == pytest.approx(want, rel=0, abs=cka_tol(8))
    # the unbiased estimator does not depend on where the features are centred
    assert reference_cka(X, Y, hsic_unbiased_ustat) == pytest.approx(want, rel=0, abs=cka_tol(8))


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances(debiased):
    X, Y = features(seed=4)
    Q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(12, 12)))
    tol = cka_tol(X.shape[0])
    assert linear_cka(X, X @ Q * 3.7, debiased=debiased) == pytest.approx(1.0, abs=tol)
    assert linear_cka(X, X + 5.0, debiased=debiased) == pytest.approx(1.0, abs=tol)
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(linear_cka(Y, X, debiased=debiased), abs=tol)
    assert linear_cka(X @ Q, Y * 0.1, debiased=debiased) == pytest.approx(
        linear_cka(X, Y, debiased=debiased), abs=tol
    )


def test_torch_input_and_range():
    X, Y = features(seed=6)
    value = linear_cka(torch.tensor(X, dtype=torch.float32), torch.tensor(Y))
    # only X's rounding to float32 differs (relative eps32 / 2 per entry); CKA is computed in float64
    assert value == pytest.approx(linear_cka(X, Y), abs=16 * float(np.finfo(np.float32).eps))
    assert 0.0 < value < 1.0


def test_debiased_near_zero_for_independent_features():
    rng = np.random.default_rng(7)
    X, Y = rng.normal(size=(200, 500)), rng.normal(size=(200, 500))
    assert linear_cka(X, Y) > 0.5  # the biased estimate is inflated when d > n
    assert abs(linear_cka(X, Y, debiased=True)) < 0.02


def test_bad_input():
    with pytest.raises(CKAError, match="rows"):
        linear_cka(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(CKAError, match=r"\(n, d\)"):
        linear_cka(np.ones(5), np.ones((5, 2)))
    with pytest.raises(CKAError, match="at least 4"):
        linear_cka(np.ones((3, 2)), np.ones((3, 2)), debiased=True)
    with pytest.raises(CKAError, match="layers"):
        cka_by_layer([np.ones((4, 2))], [])


def tiny_model_and_tokenizer():
    words = "Question : Answer how many apples does Tom have ? 1 2 3 4 5 + = #### ."
    tokenizer = make_tokenizer(texts=[words], word_level=True)
    return make_model(len(tokenizer), num_layers=3, tie_word_embeddings=False), tokenizer


PROMPTS = ["Question : how many apples ? Answer :", "Question : 1 + 2 = ? Answer :", "Tom have 3 apples ."]


@pytest.mark.parametrize("pool", ["mean", "last"])
def test_hidden_states_pooling_is_batch_invariant(pool):
    model, tokenizer = tiny_model_and_tokenizer()
    batched = hidden_states(model, tokenizer, PROMPTS, batch_size=3, pool=pool)
    assert len(batched) == 3 and batched[0].shape == (3, 32)
    for i, prompt in enumerate(PROMPTS):  # one prompt at a time: no padding at all
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True).hidden_states[1:]
        for layer, h in enumerate(out):
            want = h[0].mean(0) if pool == "mean" else h[0, -1]
            # float32 hidden states of size ~1, padded batch vs one row: ~100 ulps allowed
            np.testing.assert_allclose(batched[layer][i], want.double().numpy(), rtol=1e-5, atol=1e-5)


def test_cka_by_layer_pairs_the_same_layers():
    model_a, tokenizer = tiny_model_and_tokenizer()
    model_b = make_model(len(tokenizer), num_layers=3, tie_word_embeddings=False, seed=1)
    prompts = [*PROMPTS, "Answer : 4 + 5 = ?", "how many apples does Tom have ?", "Question : 2 + 2 = ?"]
    states_a = hidden_states(model_a, tokenizer, prompts, batch_size=4)
    states_b = hidden_states(model_b, tokenizer, prompts, batch_size=4)
    tol = cka_tol(len(prompts))
    by_kind = {}
    for debiased in (False, True):
        got = cka_by_layer(states_a, states_b, debiased=debiased)
        want = [linear_cka(a, b, debiased=debiased) for a, b in zip(states_a, states_b, strict=True)]
        assert got == pytest.approx(want, rel=0, abs=tol)
        # layer i of one model against another layer of the other gives other numbers
        crossed = [linear_cka(a, b, debiased=debiased) for a, b in zip(states_a, states_b[::-1], strict=True)]
        assert max(abs(g - c) for g, c in zip(got, crossed, strict=True)) > 1e3 * tol
        by_kind[debiased] = got
    assert max(abs(b - d) for b, d in zip(by_kind[False], by_kind[True], strict=True)) > 1e3 * tol


def test_hidden_states_bad_pool():
    model, tokenizer = tiny_model_and_tokenizer()
    with pytest.raises(CKAError, match="pool"):
        hidden_states(model, tokenizer, PROMPTS, pool="max")
