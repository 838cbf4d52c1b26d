"""The chance baseline: sampled measures against the closed forms, seeding, and the disk cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import chance
from helpers.deltas import LowRankDelta

# Modules of different sizes (so unnormalised draws would weigh them unequally) and k < r (so
# the top-k and span readings differ).
SHAPES = {
    "model.layers.0.self_attn.q_proj": (24, 16, 6),
    "model.layers.0.self_attn.k_proj": (8, 16, 6),
    "model.layers.1.self_attn.q_proj": (24, 16, 6),
    "model.layers.1.self_attn.o_proj": (16, 24, 6),
}
K = 3
SAMPLES = 300


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return chance.chance_baseline(
        SHAPES, k=K, samples=SAMPLES, cache_dir=tmp_path_factory.mktemp("c"), progress=False
    )


def _close(sampled: dict, exact: float, n: int = SAMPLES) -> bool:
    """Within 4.5 standard errors of the sample mean (a false alarm about once in 150,000 runs)."""
    return abs(sampled["mean"] - exact) <= 4.5 * sampled["sd"] / math.sqrt(n) + 1e-12


def test_closed_forms_by_hand():
    exact = chance.analytic(SHAPES, K)
    assert exact["angle_cos2_sum_mean"] == pytest.approx((9 / 24 + 9 / 8 + 9 / 24 + 9 / 16) / 4)
    assert exact["orth_frac_sq"] == pytest.approx((1 - 6 / 24 + 1 - 6 / 8 + 1 - 6 / 24 + 1 - 6 / 16) / 4)
    assert exact["orth_frac_top_k_sq"] == pytest.approx(
        (1 - 3 / 24 + 1 - 3 / 8 + 1 - 3 / 24 + 1 - 3 / 16) / 4
    )
    cos2 = (1 / (24 * 16) + 1 / (8 * 16) + 1 / (24 * 16) + 1 / (16 * 24)) / 16
    assert exact["global_cosine_sq"] == pytest.approx(cos2)
    assert exact["orth_frac_direction_sq"] == pytest.approx(1 - cos2)


def test_random_subspaces_sum_of_squared_cosines_is_k_squared_over_d(baseline):
    """E[sum cos^2 of the principal angles] of two random k-dim subspaces of R^d is k^2 / d."""
    assert _close(baseline["angle_cos2_sum"], chance.analytic(SHAPES, K)["angle_cos2_sum_mean"])


def test_sampled_squares_match_the_exact_expectations(baseline):
    exact = chance.analytic(SHAPES, K)
    for name in ("global_cosine_sq", "orth_frac_sq", "orth_frac_top_k_sq", "orth_frac_direction_sq"):
        assert _close(baseline["squares"][name], exact[name]), name
    assert _close(baseline["measures"]["global_cosine"], 0.0)
    # the orders the readings must keep hold for the chance level too
    m = baseline["measures"]
    assert m["orth_frac"]["mean"] < m["orth_frac_top_k"]["mean"] < m["orth_frac_direction"]["mean"] <= 1


def test_top_k_reading_with_its_own_k(tmp_path):
    """The top-k reading's k apart from the angles' k: E[fraction^2] = mean of 1 - top_k / d_out."""
    out = chance.chance_baseline(SHAPES, k=K, top_k=1, samples=SAMPLES, cache_dir=tmp_path, progress=False)
    exact = chance.analytic(SHAPES, K, top_k=1)
    assert exact["orth_frac_top_k_sq"] == pytest.approx(
        (1 - 1 / 24 + 1 - 1 / 8 + 1 - 1 / 24 + 1 - 1 / 16) / 4
    )
    assert _close(out["squares"]["orth_frac_top_k_sq"], exact["orth_frac_top_k_sq"])
    assert out["top_k"] == 1 and out["k"] == K


def test_summary_fields_and_layers(baseline):
    for stats in baseline["measures"].values():
        assert stats["lo"] <= stats["mean"] <= stats["hi"] and stats["sd"] >= 0
    assert all(len(v["mean"]) == 2 for v in baseline["by_layer"].values())  # two layers in SHAPES
    assert (
        0
        < baseline["measures"]["angle_min_median"]["mean"]
        < baseline["measures"]["angle_max_median"]["mean"]
    )


def test_the_two_updates_of_a_sample_are_independent():
    """An a and b drawn alike would have cosine 1; independent ones are near 0 and differ."""
    gen = torch.Generator().manual_seed(3)
    a, b = chance.random_adapter(SHAPES, gen), chance.random_adapter(SHAPES, gen)
    for m in SHAPES:
        assert a[m].frobenius_norm() == pytest.approx(1.0) and not torch.equal(a[m].B, b[m].B)
    draws = [
        chance.sample_pair(SHAPES, K, torch.Generator().manual_seed(s))["global_cosine"] for s in range(40)
    ]
    assert abs(np.mean(draws)) < 0.1 and np.std(draws) > 0


def test_seeded_and_cached_by_every_input(tmp_path, monkeypatch):
    small = dict(list(SHAPES.items())[:2])
    first = chance.chance_baseline(small, k=2, seed=1, samples=4, cache_dir=tmp_path, progress=False)
    again = chance.chance_baseline(
        small, k=2, seed=1, samples=4, cache_dir=tmp_path / "other", progress=False
    )
    assert first["measures"] == again["measures"]  # the same seed draws the same numbers
    files = sorted(tmp_path.glob("chance-*.json"))
    assert len(files) == 1

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled although the cache holds this baseline")

    monkeypatch.setattr(chance, "sample_pair", no_sampling)
    assert chance.chance_baseline(small, k=2, seed=1, samples=4, cache_dir=tmp_path)["key"] == first["key"]
    for changed in ({"seed": 2}, {"k": 1}, {"samples": 5}, {"top_k": 1}):
        args = {"k": 2, "seed": 1, "samples": 4, **changed}
        with pytest.raises(AssertionError, match="sampled although"):
            chance.chance_baseline(small, cache_dir=tmp_path, progress=False, **args)
    wider = {**small, "model.layers.0.self_attn.k_proj": (8, 16, 5)}
    with pytest.raises(AssertionError, match="sampled although"):
        chance.chance_baseline(wider, k=2, seed=1, samples=4, cache_dir=tmp_path, progress=False)


def test_update_shapes_and_bad_arguments():
    d = LowRankDelta(torch.zeros(7, 3, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64), 1.0)
    assert chance.update_shapes({"m": d}) == {"m": (7, 5, 3)}
    with pytest.raises(ValueError, match="at least 2 samples"):
        chance.chance_baseline(SHAPES, samples=1)
    with pytest.raises(ValueError, match="k must be positive"):
        chance.chance_baseline(SHAPES, k=0)


def test_beside_chance_reads_ordered_fractions_in_their_order():
    geometry = {
        "global_cosine": {"sft-grpo": 0.7, "sft-sft_order": 0.95},
        "orthogonal_fraction": {
            "grpo-sft": 0.6,
            "sft-grpo": 0.1,
            "sft_order-sft": 0.2,
            "sft-sft_order": 0.9,
            "sft-dpo": 0.3,
        },
    }
    stats = {"mean": 0.5, "sd": 0.1, "lo": 0.4, "hi": 0.6}
    chance_stub = {"measures": {key: stats for _, _, key, _ in chance.BESIDE}}
    table = chance.beside_chance(geometry, chance_stub, ["grpo-sft", "dpo-sft"])
    assert table.loc[("global cosine", "grpo-sft"), "ours"] == 0.7  # symmetric: found in either order
    assert table.loc[("global cosine", "grpo-sft"), "noise floor"] == 0.95
    assert table.loc[("orthogonal fraction, span", "grpo-sft"), "ours"] == 0.6  # GRPO outside SFT, not 0.1
    assert table.loc[("orthogonal fraction, span", "grpo-sft"), "noise floor"] == 0.2  # the rerun outside SFT
    assert table.loc[("orthogonal fraction, span", "grpo-sft"), "chance 95%"] == 0.6
    assert math.isnan(table.loc[("orthogonal fraction, top-k", "grpo-sft"), "ours"])  # not measured: empty
    assert math.isnan(
        table.loc[("orthogonal fraction, span", "dpo-sft"), "ours"]
    )  # sft-dpo is SFT outside DPO
