"""The orthogonal fraction in its three readings, each against a dense reference, and their order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers.deltas import LowRankDelta
from helpers.geometry import (
    cosine,
    cosine_by_layer,
    global_cosine,
    orthogonal_fraction,
    orthogonal_fractions,
    pairwise_report,
)

SHAPES = {"q_proj": (12, 10), "k_proj": (6, 10), "v_proj": (6, 10), "o_proj": (10, 12)}


def delta(d_out, d_in, r, seed, scale=0.5, module=None, layer=None) -> LowRankDelta:
    gen = torch.Generator().manual_seed(seed)
    B = torch.randn(d_out, r, generator=gen, dtype=torch.float64)
    A = torch.randn(r, d_in, generator=gen, dtype=torch.float64)
    return LowRankDelta(
        B, A, scale, module=module, layer=layer, projection=module and module.rsplit(".", 1)[-1]
    )


def adapter(seed, r=4, layers=2, mix=None, share=0.0) -> dict[str, LowRankDelta]:
    """Random updates of every module; with `mix`, `share` of each B comes from mix's (partly aligned)."""
    out = {}
    for layer in range(layers):
        for i, (proj, (d_out, d_in)) in enumerate(SHAPES.items()):
            name = f"model.layers.{layer}.self_attn.{proj}"
            d = delta(d_out, d_in, r, seed * 100 + layer * 10 + i, module=name, layer=layer)
            if mix is not None:
                d = LowRankDelta(
                    share * mix[name].B + (1 - share) * d.B, mix[name].A, d.scale, name, layer, proj
                )
            out[name] = d
    return out


def dense_fraction(b: LowRankDelta, basis: np.ndarray) -> float:
    """||W_b - Q Q^T W_b|| / ||W_b|| for an orthonormal d_out x j basis Q, on dense matrices."""
    Wb = b.dense().numpy()
    return float(np.linalg.norm(Wb - basis @ (basis.T @ Wb)) / np.linalg.norm(Wb))


def top_left(a: LowRankDelta, k: int) -> np.ndarray:
    u, s, _ = np.linalg.svd(a.dense().numpy(), full_matrices=False)
    rank = int((s > s[0] * max(a.shape) * np.finfo(float).eps).sum())
    return u[:, : min(k, rank)]


CASES = [(12, 9, 4, 3), (12, 9, 4, 10), (7, 15, 5, 2), (20, 20, 3, 1), (9, 6, 6, 4)]


@pytest.mark.parametrize("d_out,d_in,r,k", CASES)
def test_direction_is_sqrt_one_minus_cos_squared(d_out, d_in, r, k):
    for seed in range(4):
        a, b = delta(d_out, d_in, r, seed), delta(d_out, d_in, r, seed + 50)
        # b plus part of a: a cosine far from 0, so 1 - cos^2 is not just 1 - |cos|
        mixed = LowRankDelta(torch.cat([b.B * b.scale, a.B * a.scale], 1), torch.cat([b.A, a.A * 0.7]), 1.0)
        for x, y in ((a, b), (a, mixed), (mixed, a)):
            want = math.sqrt(1 - cosine(x, y) ** 2)
            assert orthogonal_fraction(y, x, reading="direction") == pytest.approx(want, rel=1e-10, abs=1e-12)
            wx, wy = x.dense().numpy().ravel(), y.dense().numpy().ravel()
            dense = np.linalg.norm(wy - wx * (wx @ wy) / (wx @ wx)) / np.linalg.norm(wy)
            assert orthogonal_fraction(y, x, reading="direction") == pytest.approx(dense, rel=1e-9, abs=1e-12)
    assert 0.1 < abs(cosine(a, mixed)) < 0.95  # the test is not only near cos = 0


@pytest.mark.parametrize("d_out,d_in,r,k", CASES)
def test_top_k_is_the_dense_projection_onto_the_top_k_left_singular_vectors(d_out, d_in, r, k):
    for seed in range(4):
        a, b = delta(d_out, d_in, r, seed), delta(d_out, d_in, r, seed + 50)
        mix = torch.randn(r, r, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        inside = LowRankDelta(a.B @ mix, b.A, 1.0)  # b's columns inside a's span
        for y in (b, inside):
            want = dense_fraction(y, top_left(a, k))
            assert orthogonal_fraction(y, a, reading="top_k", k=k) == pytest.approx(want, rel=1e-9, abs=1e-12)
            span = dense_fraction(y, top_left(a, a.rank))
            assert orthogonal_fraction(y, a, reading="span") == pytest.approx(span, rel=1e-9, abs=1e-12)
    # below a's rank the top-k reading differs from the span reading (else the test proves nothing)
    a, b = delta(12, 9, 4, 1), delta(12, 9, 4, 2)
    inside = LowRankDelta(a.B, b.A, 1.0)
    assert orthogonal_fraction(inside, a, reading="top_k", k=2) > orthogonal_fraction(inside, a) + 0.05


def test_k_alone_keeps_its_older_meaning_and_bad_readings_are_refused():
    a, b = delta(12, 9, 4, 3), delta(12, 9, 4, 4)
    assert orthogonal_fraction(b, a, k=2) == orthogonal_fraction(b, a, reading="top_k", k=2)
    assert orthogonal_fraction(b, a) == orthogonal_fraction(b, a, reading="span")
    assert orthogonal_fraction(b, a, reading="top_k") == orthogonal_fraction(b, a, reading="top_k", k=10)
    with pytest.raises(ValueError, match="reading must be one of"):
        orthogonal_fraction(b, a, reading="columns")
    with pytest.raises(ValueError, match="k must be positive"):
        orthogonal_fraction(b, a, reading="top_k", k=0)


def test_span_never_exceeds_direction_nor_top_k():
    """The docstring's proof, on random cases: module, layer and global level."""
    rng = np.random.default_rng(0)
    for trial in range(40):
        d_out, d_in, r = (int(x) for x in rng.integers(2, 14, size=3))
        a = delta(d_out, d_in, r, 1000 + trial)
        b = delta(d_out, d_in, int(rng.integers(1, 6)), 2000 + trial)
        share = float(rng.uniform(0, 1))
        b = LowRankDelta(torch.cat([b.B * (1 - share), a.B * share], 1), torch.cat([b.A, a.A]), 1.0)
        span = orthogonal_fraction(b, a, reading="span")
        assert span <= orthogonal_fraction(b, a, reading="direction") + 1e-12
        assert span <= orthogonal_fraction(b, a, reading="top_k", k=int(rng.integers(1, 5))) + 1e-12
    for seed in range(6):
        a = adapter(seed)
        b = adapter(seed + 20, mix=a, share=0.2 * (seed % 5))
        span, direction = orthogonal_fractions(b, a, "span"), orthogonal_fractions(b, a, "direction")
        assert span["global"] <= direction["global"] + 1e-12
        assert all(span["by_layer"][g] <= direction["by_layer"][g] + 1e-12 for g in span["by_layer"])


def test_readings_per_layer_and_global():
    a = adapter(1)
    b = adapter(2, mix=a, share=0.6)
    direction = orthogonal_fractions(b, a, reading="direction")
    assert direction["global"] == pytest.approx(math.sqrt(1 - global_cosine(a, b) ** 2), rel=1e-10)
    for layer, cos in cosine_by_layer(a, b).items():
        assert direction["by_layer"][layer] == pytest.approx(math.sqrt(1 - cos**2), rel=1e-10)
    top = orthogonal_fractions(b, a, reading="top_k", k=2)
    resid = {m: (dense_fraction(b[m], top_left(a[m], 2)) * b[m].frobenius_norm()) ** 2 for m in a}
    total = sum(d.frobenius_norm() ** 2 for d in b.values())
    assert top["global"] == pytest.approx(math.sqrt(sum(resid.values()) / total), rel=1e-9)
    assert top["by_module"] == pytest.approx(
        {m: dense_fraction(b[m], top_left(a[m], 2)) for m in a}, rel=1e-9
    )
    assert top["reading"] == "top_k" and top["k"] == 2 and direction["k"] is None


def test_report_holds_every_reading_both_ways():
    a = adapter(3)
    b = adapter(4, mix=a, share=0.5)
    report = pairwise_report({"a": a, "b": b}, k=2, progress=False)
    (entry,) = report["pairs"]
    assert report["readings"] == ["span", "top_k", "direction"]
    for reading, suffix in (("span", ""), ("top_k", "_top_k"), ("direction", "_direction")):
        for key, x, y in ((f"orth_frac{suffix}", a, b), (f"orth_frac_rev{suffix}", b, a)):
            want = orthogonal_fractions(y, x, reading=reading, k=2)
            assert entry[key] == pytest.approx(want["global"], rel=1e-10), key
            assert entry[f"{key}_by_layer"] == pytest.approx(list(want["by_layer"].values()), rel=1e-10), key
            assert entry[f"{key}_by_module"] == pytest.approx(list(want["by_module"].values()), rel=1e-10), (
                key
            )
    assert entry["orth_frac"] != pytest.approx(entry["orth_frac_top_k"])  # the readings differ here
    # the top-k reading's k may differ from the principal angles' k
    other = pairwise_report({"a": a, "b": b}, k=3, top_k=1, progress=False)
    assert other["k"] == 3 and other["top_k"] == 1
    assert other["pairs"][0]["orth_frac_top_k"] == pytest.approx(
        orthogonal_fractions(b, a, "top_k", 1)["global"]
    )
    assert other["pairs"][0]["angle_max_median"] == pytest.approx(
        pairwise_report({"a": a, "b": b}, k=3, progress=False)["pairs"][0]["angle_max_median"]
    )


def test_effective_rank_summaries_leave_out_zero_updates():
    a = adapter(5)
    zeroed = dict(a)
    first = next(iter(a))
    zeroed[first] = LowRankDelta(a[first].B * 0, a[first].A, 1.0, first, 0, "q_proj")
    per = pairwise_report({"a": zeroed, "b": adapter(6)}, progress=False)["per_method"]["a"]
    ranks = per["effective_rank_by_module"]
    assert math.isnan(ranks[0]) and all(math.isfinite(v) for v in ranks[1:])
    assert per["effective_rank_median"] == pytest.approx(float(np.median(ranks[1:])))
    assert per["effective_rank_mean"] == pytest.approx(float(np.mean(ranks[1:])))


def test_readings_frame_takes_each_update_outside_the_reference():
    from helpers.geometry_table import readings_frame

    a, b, c = adapter(7), adapter(8), adapter(9)
    report = pairwise_report({"b": b, "ref": a, "c": c}, k=2, progress=False)  # ref is a's b-side in (b, ref)
    table = readings_frame(report, "ref")
    for name, delta in (("b", b), ("c", c)):
        for reading in ("span", "top_k", "direction"):
            want = orthogonal_fractions(delta, a, reading=reading, k=2)["global"]
            assert table.loc[name, reading] == pytest.approx(want, rel=1e-10), (name, reading)
    assert "ref" not in table.index
