"""Centred kernel alignment (CKA) of hidden states: do two models represent prompts alike?

Linear CKA (Kornblith et al. 2019) compares two sets of features of the same n
inputs up to rotation and isotropic scaling. The debiased version replaces HSIC by
its unbiased estimator (Song et al. 2012; Nguyen et al. 2020), so independent
features score near 0 even when the feature dimension exceeds n.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .progress import tqdm


class CKAError(ValueError):
    """Feature matrices that cannot be compared."""


def _as_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise CKAError(f"linear_cka: {name} must be an (n, d) matrix, got shape {x.shape}")
    return x


def _unbiased_hsic(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC of two Gram matrices (diagonals are zeroed here)."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    k_sum, l_sum = K.sum(0), L.sum(0)
    value = np.sum(K * L) + k_sum.sum() * l_sum.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k_sum @ l_sum)
    return float(value / (n * (n - 3)))


def linear_cka(X: Any, Y: Any, debiased: bool = False) -> float:
    """Linear CKA of features X (n, d1) and Y (n, d2) of the same n inputs, in [0, 1].

    Features are centred over the n inputs. Biased: <K, L> / (|K| |L|) with centred
    Gram matrices K = X X^T, L = Y Y^T (computed in feature space when d < n). Debiased:
    the same ratio with unbiased HSIC estimates (needs n >= 4; can dip slightly below 0).
    """
    X, Y = _as_array(X, "X"), _as_array(Y, "Y")
    n = X.shape[0]
    if Y.shape[0] != n:
        raise CKAError(f"linear_cka: X has {n} rows but Y has {Y.shape[0]}; rows must be the same inputs")
    if n < (4 if debiased else 2):
        raise CKAError(f"linear_cka: needs at least {4 if debiased else 2} inputs, got {n}")
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    if debiased:
        K, L = X @ X.T, Y @ Y.T
        xy, xx, yy = _unbiased_hsic(K, L), _unbiased_hsic(K, K), _unbiased_hsic(L, L)
    elif max(X.shape[1], Y.shape[1]) < n:
        # <XX^T, YY^T> = |Y^T X|^2: d1 x d2 products instead of n x n
        xy = float(np.sum((Y.T @ X) ** 2))
        xx, yy = float(np.sum((X.T @ X) ** 2)), float(np.sum((Y.T @ Y) ** 2))
    else:
        K, L = X @ X.T, Y @ Y.T
        xy, xx, yy = float(np.sum(K * L)), float(np.sum(K * K)), float(np.sum(L * L))
    denom = np.sqrt(xx * yy) if xx > 0 and yy > 0 else 0.0
    return float(xy / denom) if denom > 0 else float("nan")


def cka_by_layer(
    states_a: Sequence[np.ndarray], states_b: Sequence[np.ndarray], debiased: bool = False
) -> list[float]:
    """linear_cka of the same layer of two models, for every layer."""
    if len(states_a) != len(states_b):
        raise CKAError(
            f"cka_by_layer: {len(states_a)} layers vs {len(states_b)}; compare models of one architecture"
        )
    return [linear_cka(a, b, debiased=debiased) for a, b in zip(states_a, states_b, strict=True)]


@torch.no_grad()
def hidden_states(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int = 16,
    pool: str = "mean",
    max_length: int = 1024,
) -> list[np.ndarray]:
    """Pooled hidden states of each transformer block: one (n_prompts, d) float64 array per layer.

    Prompts (already formatted, e.g. by helpers.prompting.build_prompt) are tokenised
    without extra special tokens, cut from the left to max_length, and right-padded.
    pool="mean" averages over the prompt's non-padding tokens; pool="last" takes the
    last prompt token (what the next token is predicted from). Layers are HF's
    output_hidden_states without the embedding output, so entry i is block i's output
    (the last entry has the model's final norm applied, as HF returns it).
    """
    if pool not in ("mean", "last"):
        raise CKAError(f"hidden_states: pool must be 'mean' or 'last', got {pool!r}")
    if len(prompts) == 0:
        raise CKAError("hidden_states: no prompts given")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    per_layer: list[list[np.ndarray]] | None = None
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="hidden states", leave=False):
            batch = [
                tokenizer(p, add_special_tokens=False)["input_ids"][-max_length:]
                for p in prompts[start : start + batch_size]
            ]
            if any(len(ids) == 0 for ids in batch):
                raise CKAError(f"hidden_states: a prompt in batch starting at {start} tokenises to nothing")
            width = max(len(ids) for ids in batch)
            input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in batch], device=device)
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch], device=device)
            outputs = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
            layers = outputs.hidden_states[1:]
            if per_layer is None:
                per_layer = [[] for _ in layers]
            weights = mask.to(torch.float64)
            last = mask.sum(1) - 1
            for store, h in zip(per_layer, layers, strict=True):
                h = h.to(torch.float64)
                if pool == "mean":
                    pooled = (h * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
                else:
                    pooled = h[torch.arange(h.shape[0], device=device), last]
                store.append(pooled.cpu().numpy())
    finally:
        model.train(was_training)
    return [np.concatenate(chunks) for chunks in per_layer]
