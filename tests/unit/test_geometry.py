"""Factored geometry against a dense reference (numpy SVD), checked itself against 50-digit mpmath.

Tolerances follow the conditioning of what is compared, not one machine's last digits:
a backward error of ~eps ||dW|| in an SVD moves the top-k singular subspace by about
eps ||dW|| / gap_k (Davis-Kahan / Wedin), where gap_k = s_k - s_{k+1}; every quantity
built on a subspace (principal angles, projections, top-1 alignment) inherits that
error, and SLACK covers the dimension-dependent constants. Principal angles are
compared in radians as atan2(sin, cos) with cosines from svd(Q_a^T Q_b) and sines
from svd(Q_b - Q_a Q_a^T Q_b), each well conditioned where it is used.
(scipy.linalg.subspace_angles is not a safe reference: it aligns its arcsin/arccos
mask with the wrong end of the angles, so tiny angles mixed with large ones come out
of arccos with errors near sqrt(eps) ~ 1e-8 rad, depending on LAPACK's rounding.)
"""

import functools
import json
import math

import mpmath
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from helpers.deltas import AdapterError, LowRankDelta
from helpers.geometry import (
    base_overlap,
    base_subspace,
    cosine,
    cosine_by_layer,
    effective_rank,
    factored_svd,
    global_cosine,
    global_norm,
    json_safe,
    main,
    orthogonal_fraction,
    orthogonal_fractions,
    pairwise_report,
    principal_angles,
    report_table,
    top1_alignment,
)

# (d_out, d_in, r, numerical rank): k < r, k = r, d_out < d_in, d_out > d_in, rank-deficient
SHAPES = [(12, 20, 4, 4), (20, 12, 5, 5), (9, 9, 6, 6), (16, 24, 6, 3), (8, 30, 8, 8)]
EPS = float(np.finfo(np.float64).eps)
# Observed errors are at most ~4 eps * condition here (1 and 2 threads); 100 leaves room for
# other LAPACK builds while staying ~1e5 times below the 1e-8 rad of an arccos used for a tiny angle.
SLACK = 100.0


def random_delta(d_out, d_in, r, rank=None, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    B = torch.randn(d_out, r, generator=gen, dtype=torch.float64)
    A = torch.randn(r, d_in, generator=gen, dtype=torch.float64)
    if rank is not None and rank < r:  # B's extra columns are combinations of the first `rank`
        B[:, rank:] = B[:, :rank] @ torch.randn(rank, r - rank, generator=gen, dtype=torch.float64)
    return LowRankDelta(B, A, scale)


def shared_pair(d_out, d_in, r, rank):
    """Two updates that share a component, so their angles are not all near 90 degrees."""
    a = random_delta(d_out, d_in, r, rank, seed=2)
    b = random_delta(d_out, d_in, r, rank, seed=3, scale=-0.5)
    return a, LowRankDelta(b.B + 0.8 * a.B, b.A + 0.5 * a.A, b.scale)


def dense_svd(delta):
    W = delta.dense().numpy()
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    q = np.linalg.matrix_rank(W)
    return U[:, :q], S[:q], Vt[:q].T


def subspace_condition(delta, k):
    """s_1 / (s_k - s_{k+1}) of dW (s_{k+1} = 0 past the numerical rank): how much a backward
    error of eps ||dW|| moves the top-k singular subspace, in units of eps."""
    S = dense_svd(delta)[1]
    k = min(k, S.size)
    return S[0] / (S[k - 1] - (S[k] if k < S.size else 0.0))


def angle_tol(a, b, k):
    """Absolute tolerance (radians) of principal angles between top-k subspaces of a and b."""
    return SLACK * EPS * (subspace_condition(a, k) + subspace_condition(b, k))


def reference_angles(qa, qb):
    """Principal angles (radians, ascending) of two orthonormal bases, as atan2(sin, cos):
    the i-th largest cosine pairs with the i-th smallest sine."""
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    cross = qa.T @ qb
    cos = np.linalg.svd(cross, compute_uv=False)
    sin = np.sort(np.linalg.svd(qb - qa @ cross, compute_uv=False))
    return np.arctan2(sin, cos)


def dense_angles(a, b, k, side="left"):
    """Reference principal angles in radians between the top-k left (or right) singular subspaces."""
    ua, _, va = dense_svd(a)
    ub, _, vb = dense_svd(b)
    qa, qb = (ua, ub) if side == "left" else (va, vb)
    k = min(k, qa.shape[1], qb.shape[1])
    return reference_angles(qa[:, :k], qb[:, :k])


@functools.cache
def _mp_svd(delta_key):
    d_out, d_in, r, rank, which = delta_key
    delta = shared_pair(d_out, d_in, r, rank)[which]
    with mpmath.workdps(50):
        # float64 -> mpf is exact, so this is the SVD of the very matrix the float64 code sees
        W = mpmath.matrix(delta.B.numpy().tolist()) * mpmath.matrix(delta.A.numpy().tolist())
        U, S, V = mpmath.svd_r(W * mpmath.mpf(delta.scale))
        order = sorted(range(len(S)), key=lambda i: -S[i])
        return U, V.T, order  # V.T: columns are the right singular vectors


def mp_angles(shape, k, side):
    """50-digit principal angles (radians, ascending) of shared_pair(*shape)'s top-k subspaces."""
    rank = shape[3]
    k = min(k, rank)
    with mpmath.workdps(50):
        bases = []
        for which in (0, 1):
            U, V, order = _mp_svd((*shape, which))
            M = U if side == "left" else V
            bases.append(mpmath.matrix([[M[i, j] for j in order[:k]] for i in range(M.rows)]))
        qa, qb = bases
        cos = mpmath.svd_r(qa.T * qb, compute_uv=False)
        return sorted(float(mpmath.acos(min(c, mpmath.mpf(1)))) for c in cos)


def dense_orth(b, a):
    """||dW_b - P_a dW_b|| / ||dW_b|| with P_a the projector on a's column space (dense)."""
    ua, _, _ = dense_svd(a)
    Wb = b.dense().numpy()
    return np.linalg.norm(Wb - ua @ (ua.T @ Wb)) / np.linalg.norm(Wb)


def orth_tol(a, k=None):
    """Absolute tolerance of an orthogonal fraction against a's column space (or top-k subspace):
    the fraction moves by at most the projector's error."""
    return SLACK * EPS * subspace_condition(a, a.rank if k is None else k)


def rank1(u, v, scale=1.0):
    u = torch.as_tensor(u, dtype=torch.float64)[:, None]
    v = torch.as_tensor(v, dtype=torch.float64)[None, :]
    return LowRankDelta(u, v, scale)


@pytest.mark.parametrize("d_out,d_in,r,rank", SHAPES)
def test_factored_svd_matches_dense(d_out, d_in, r, rank):
    delta = random_delta(d_out, d_in, r, rank, seed=1)
    svd = factored_svd(delta)
    _, S, _ = dense_svd(delta)
    assert svd.rank == rank
    # singular values and the product move by ~eps * s_1 (Weyl), not by eps * s_i
    np.testing.assert_allclose(svd.S.numpy(), S, rtol=0, atol=SLACK * EPS * S[0])
    dense = delta.dense()
    torch.testing.assert_close(
        svd.U @ torch.diag(svd.S) @ svd.V.T, dense, rtol=0, atol=SLACK * EPS * float(S[0])
    )
    eye = torch.eye(rank, dtype=torch.float64)
    torch.testing.assert_close(svd.U.T @ svd.U, eye, atol=SLACK * EPS, rtol=0)
    torch.testing.assert_close(svd.V.T @ svd.V, eye, atol=SLACK * EPS, rtol=0)


@pytest.mark.parametrize("d_out,d_in,r,rank", SHAPES)
@pytest.mark.parametrize("k", [2, 4, 10])
def test_against_dense_reference(d_out, d_in, r, rank, k):
    a, b = shared_pair(d_out, d_in, r, rank)
    Wa, Wb = a.dense().numpy(), b.dense().numpy()
    # a cosine is a ratio of sums of d_out * d_in products: absolute error ~ eps
    assert cosine(a, b) == pytest.approx(
        np.sum(Wa * Wb) / np.linalg.norm(Wa) / np.linalg.norm(Wb), rel=0, abs=SLACK * EPS
    )
    for side in ("left", "right"):
        got = principal_angles(a, b, k=k, side=side)
        want = dense_angles(a, b, k, side)
        assert len(got) == min(k, rank)
        assert np.all(np.diff(got) >= 0)
        np.testing.assert_allclose(np.radians(got), want, rtol=0, atol=angle_tol(a, b, k))
    assert orthogonal_fraction(b, a) == pytest.approx(dense_orth(b, a), rel=0, abs=orth_tol(a))
    S = dense_svd(a)[1]
    p = S / S.sum()
    # every p_i moves by ~eps * s_1 / sum(S); the entropy's slope is |log p_i| + 1
    erank_tol = SLACK * EPS * S[0] / S.sum() * np.sum(1 - np.log(p))
    want_erank = math.exp(-(p * np.log(p)).sum())
    assert effective_rank(a) == pytest.approx(want_erank, rel=erank_tol, abs=0)
    (ua, _, va), (ub, _, vb) = dense_svd(a), dense_svd(b)
    out, inp = top1_alignment(a, b)
    top1_tol = angle_tol(a, b, 1)
    assert out == pytest.approx(abs(ua[:, 0] @ ub[:, 0]), rel=0, abs=top1_tol)
    assert inp == pytest.approx(abs(va[:, 0] @ vb[:, 0]), rel=0, abs=top1_tol)


@pytest.mark.parametrize("d_out,d_in,r,rank", SHAPES)
def test_reference_and_factored_angles_against_mpmath(d_out, d_in, r, rank):
    # The dense reference must itself be right near the degenerate cases (angles that are exactly 0
    # where two 6-dim subspaces of R^9 meet, a rank-deficient update): check both against 50 digits.
    a, b = shared_pair(d_out, d_in, r, rank)
    for k in (2, 10):
        for side in ("left", "right"):
            exact = mp_angles((d_out, d_in, r, rank), k, side)
            tol = angle_tol(a, b, k)
            np.testing.assert_allclose(dense_angles(a, b, k, side), exact, rtol=0, atol=tol)
            np.testing.assert_allclose(np.radians(principal_angles(a, b, k, side)), exact, rtol=0, atol=tol)
    if (d_out, d_in, r) == (9, 9, 6):  # the degenerate case: three angles are exactly 0
        # (acos of a 50-digit cosine resolves an angle to ~1e-25 rad)
        assert max(mp_angles((d_out, d_in, r, rank), 10, "left")[:3]) < 1e-20


def orthonormal(d, k, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))[0]


def test_tiny_and_large_angles_mixed():
    # Known angles, from 1e-10 rad to 1e-9 rad short of 90 degrees, in one pair of 5-dim
    # subspaces of R^12: b's i-th direction is cos(t_i) e_i + sin(t_i) e_{5+i} in a random rotation.
    # arccos of a cosine this close to 1 (or arcsin of a sine this close to 1) loses ~1e-8 rad.
    theta = np.array([1e-10, 1e-6, 0.3, 1.2, np.pi / 2 - 1e-9])
    k = theta.size
    rot = orthonormal(12, 12, seed=20)
    e = torch.eye(12, dtype=torch.float64)
    ua = rot @ e[:, :k]
    ub = rot @ (e[:, :k] * torch.tensor(np.cos(theta)) + e[:, k : 2 * k] * torch.tensor(np.sin(theta)))
    inner = orthonormal(7, k, seed=21)
    s = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    a = LowRankDelta(ua * s, inner.T, 1.0)
    b = LowRankDelta(ub * s.flip(0), inner.T, 1.0)
    got = np.radians(principal_angles(a, b, k=k))
    # the bases carry rounding of ~eps; both updates are well conditioned (s_1 / s_5 = 5)
    np.testing.assert_allclose(got, theta, rtol=0, atol=SLACK * EPS)
    assert got[0] == pytest.approx(1e-10, rel=1e-4)  # the tiny angle to 4 digits, not 0 or 1e-8


@pytest.mark.parametrize(
    "theta,phi", [(0.0, 0.0), (0.3, 1.1), (np.pi / 4, 0.2), (1.2, np.pi / 2), (np.pi / 2, 0.7)]
)
def test_rank1_known_angles(theta, phi):
    e = np.eye(6)
    f = np.eye(9)
    a = rank1(e[0], f[0], scale=3.0)
    b = rank1(np.cos(theta) * e[0] + np.sin(theta) * e[1], np.cos(phi) * f[0] + np.sin(phi) * f[1], scale=0.5)
    # unit vectors built from rounded sines and cosines: everything is exact to a few eps
    tol = SLACK * EPS
    assert cosine(a, b) == pytest.approx(np.cos(theta) * np.cos(phi), abs=tol)
    assert principal_angles(a, b, k=10) == pytest.approx([np.degrees(theta)], abs=np.degrees(tol))
    assert principal_angles(a, b, k=10, side="right") == pytest.approx([np.degrees(phi)], abs=np.degrees(tol))
    assert orthogonal_fraction(b, a) == pytest.approx(np.sin(theta), abs=tol)
    assert top1_alignment(a, b) == pytest.approx((abs(np.cos(theta)), abs(np.cos(phi))), abs=tol)


def test_identical_orthogonal_and_scaled():
    a = random_delta(30, 20, 4, seed=4)
    tol = angle_tol(a, a, 4)
    np.testing.assert_allclose(np.radians(principal_angles(a, a, k=4)), 0.0, atol=tol)
    assert cosine(a, a) == pytest.approx(1.0, abs=SLACK * EPS)
    scaled = LowRankDelta(a.B * 3.0, a.A, a.scale * 7.0)
    assert cosine(a, scaled) == pytest.approx(1.0, abs=SLACK * EPS)
    flipped = LowRankDelta(a.B, a.A, -a.scale)
    assert cosine(a, flipped) == pytest.approx(-1.0, abs=SLACK * EPS)
    np.testing.assert_allclose(np.radians(principal_angles(a, flipped, k=4)), 0.0, atol=tol)
    # b's columns orthogonal to a's: project a random B off a's column space
    gen = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(a.B)
    Bb = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    Bb = Bb - q @ (q.T @ Bb)
    b = LowRankDelta(Bb, torch.randn(3, 20, generator=gen, dtype=torch.float64), 1.0)
    np.testing.assert_allclose(np.radians(principal_angles(a, b, k=3)), np.pi / 2, atol=angle_tol(a, b, 3))
    assert orthogonal_fraction(b, a) == pytest.approx(1.0, abs=SLACK * EPS * subspace_condition(a, 4))
    assert cosine(a, b) == pytest.approx(0.0, abs=SLACK * EPS)


def test_orthogonal_fraction_in_span():
    a = random_delta(25, 18, 5, seed=6)
    gen = torch.Generator().manual_seed(7)
    inside = LowRankDelta(a.B @ torch.randn(5, 3, generator=gen, dtype=torch.float64), a.A[:3] * 0 + 1.0, 0.3)
    assert orthogonal_fraction(inside, a) == pytest.approx(0.0, abs=SLACK * EPS * subspace_condition(a, 5))
    # top-k projection: with k below a's rank, some of b falls outside
    u = dense_svd(a)[0][:, :2]
    Wb = inside.dense().numpy()
    want = np.linalg.norm(Wb - u @ (u.T @ Wb)) / np.linalg.norm(Wb)
    tol = SLACK * EPS * subspace_condition(a, 2)
    assert 0.01 < want and orthogonal_fraction(inside, a, k=2) == pytest.approx(want, rel=0, abs=tol)


def test_effective_rank_equal_singular_values():
    q_out = orthonormal(40, 6, seed=8)
    q_in = orthonormal(30, 6, seed=9)
    assert effective_rank(LowRankDelta(q_out, q_in.T, 2.5)) == pytest.approx(6.0, rel=SLACK * EPS)
    assert effective_rank(LowRankDelta(q_out[:, :1], q_in.T[:1], 1.0)) == pytest.approx(1.0, rel=SLACK * EPS)


def test_zero_delta():
    zero = LowRankDelta(torch.zeros(10, 4, dtype=torch.float64), torch.ones(4, 8, dtype=torch.float64), 2.0)
    a = random_delta(10, 8, 4, seed=9)
    assert math.isnan(cosine(zero, a))
    assert principal_angles(zero, a).size == 0
    assert effective_rank(zero) == 0.0
    assert orthogonal_fraction(a, zero) == 1.0
    assert math.isnan(orthogonal_fraction(zero, a))


def test_base_overlap_dense():
    gen = torch.Generator().manual_seed(10)
    W = torch.randn(20, 14, generator=gen, dtype=torch.float64)
    a = random_delta(20, 14, 4, seed=11)
    U, S_w, _ = np.linalg.svd(W.numpy())
    uk = U[:, :5]
    Wa = a.dense().numpy()
    # the overlap is a squared projection norm in [0, 1]: it moves by ~2x the error of W's top-5 subspace
    tol = 2 * SLACK * EPS * (S_w[0] / (S_w[4] - S_w[5]) + subspace_condition(a, 4))
    assert base_overlap(a, base_subspace(W, 5)) == pytest.approx(
        np.linalg.norm(uk.T @ Wa) ** 2 / np.linalg.norm(Wa) ** 2, rel=0, abs=tol
    )


def adapter(seed, layers=2, shared=None):
    """Deltas keyed like a PEFT adapter: q/k/v/o of `layers` blocks, different shapes."""
    shapes = {"q_proj": (24, 16), "k_proj": (8, 16), "v_proj": (8, 16), "o_proj": (16, 24)}
    out = {}
    for layer in range(layers):
        for i, (proj, (d_out, d_in)) in enumerate(shapes.items()):
            name = f"model.layers.{layer}.self_attn.{proj}"
            d = random_delta(d_out, d_in, 4, seed=seed * 100 + layer * 10 + i, scale=2.0)
            if shared is not None:
                s = shared[name]
                d = LowRankDelta(d.B * 0.3 + s.B, d.A * 0.3 + s.A, 2.0)
            out[name] = LowRankDelta(d.B, d.A, d.scale, module=name, layer=layer, projection=proj)
    return out


def flat(deltas):
    return np.concatenate([d.dense().numpy().ravel() for d in deltas.values()])


def test_global_and_layer_cosine():
    a = adapter(1)
    b = adapter(2, shared=a)
    fa, fb = flat(a), flat(b)
    want = fa @ fb / np.linalg.norm(fa) / np.linalg.norm(fb)
    assert global_cosine(a, b) == pytest.approx(want, rel=0, abs=SLACK * EPS)
    assert global_norm(a) == pytest.approx(np.linalg.norm(fa), rel=SLACK * EPS)
    by_layer = cosine_by_layer(a, b)
    for layer in (0, 1):
        la = flat({k: v for k, v in a.items() if v.layer == layer})
        lb = flat({k: v for k, v in b.items() if v.layer == layer})
        want = la @ lb / np.linalg.norm(la) / np.linalg.norm(lb)
        assert by_layer[layer] == pytest.approx(want, rel=0, abs=SLACK * EPS)
    with pytest.raises(AdapterError, match="different modules"):
        global_cosine(a, {k: v for k, v in b.items() if "q_proj" not in k})


def test_orthogonal_fractions_global_and_by_layer():
    a = adapter(1)
    b = adapter(2, shared=a)
    result = orthogonal_fractions(b, a)
    tol = max(orth_tol(a[m]) for m in a)  # a pooled fraction is no worse than its worst module
    resid = {m: (dense_orth(b[m], a[m]) * b[m].frobenius_norm()) ** 2 for m in a}
    assert result["global"] == pytest.approx(math.sqrt(sum(resid.values())) / global_norm(b), rel=0, abs=tol)
    for layer in (0, 1):
        mods = [m for m in a if a[m].layer == layer]
        want = math.sqrt(sum(resid[m] for m in mods) / sum(b[m].frobenius_norm() ** 2 for m in mods))
        assert result["by_layer"][layer] == pytest.approx(want, rel=0, abs=tol)
    assert result["by_module"] == pytest.approx({m: dense_orth(b[m], a[m]) for m in a}, rel=0, abs=tol)
    assert 0.05 < result["global"] < 0.95


def test_pairwise_report_against_dense():
    base = adapter(1)
    deltas = {"sft": base, "rft": adapter(2, shared=base), "dpo": adapter(3)}
    threads = torch.get_num_threads()
    report = pairwise_report(deltas, k=3, progress=False, threads=1)
    assert torch.get_num_threads() == threads  # the loop's thread setting is restored
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [("sft", "rft"), ("sft", "dpo"), ("rft", "dpo")]
    assert report["layers"] == [0, 1] and report["modules"] == list(base)
    # the report and the functions it calls agree to rounding; the dense references to conditioning
    same = SLACK * EPS
    for pair in report["pairs"]:
        a, b = deltas[pair["a"]], deltas[pair["b"]]
        assert pair["global_cosine"] == pytest.approx(global_cosine(a, b), rel=0, abs=same)
        assert pair["cosine_by_layer"] == pytest.approx(list(cosine_by_layer(a, b).values()), rel=0, abs=same)
        angle_deg = np.degrees(max(angle_tol(a[m], b[m], 3) for m in a))
        mins = [np.degrees(dense_angles(a[m], b[m], 3)[0]) for m in a]
        maxs = [np.degrees(dense_angles(a[m], b[m], 3)[-1]) for m in a]
        assert pair["angle_min_median"] == pytest.approx(np.median(mins), rel=0, abs=angle_deg)
        assert pair["angle_max_median"] == pytest.approx(np.median(maxs), rel=0, abs=angle_deg)
        maxs_in = [np.degrees(dense_angles(a[m], b[m], 3, "right")[-1]) for m in a]
        assert pair["angle_max_input_median"] == pytest.approx(np.median(maxs_in), rel=0, abs=angle_deg)
        # global orthogonal fraction: summed squared residuals over summed squared norms
        tol_ab, tol_ba = max(orth_tol(a[m]) for m in a), max(orth_tol(b[m]) for m in a)
        resid = sum((dense_orth(b[m], a[m]) * b[m].frobenius_norm()) ** 2 for m in a)
        assert pair["orth_frac"] == pytest.approx(math.sqrt(resid / global_norm(b) ** 2), rel=0, abs=tol_ab)
        want_by_module = [dense_orth(b[m], a[m]) for m in a]
        assert pair["orth_frac_by_module"] == pytest.approx(want_by_module, rel=0, abs=tol_ab)
        resid_rev = sum((dense_orth(a[m], b[m]) * a[m].frobenius_norm()) ** 2 for m in a)
        want_rev = math.sqrt(resid_rev / global_norm(a) ** 2)
        assert pair["orth_frac_rev"] == pytest.approx(want_rev, rel=0, abs=tol_ba)
        tops = [top1_alignment(a[m], b[m]) for m in a]
        assert pair["top1_output_mean"] == pytest.approx(np.mean([t[0] for t in tops]), rel=0, abs=same)
        assert pair["top1_input_mean"] == pytest.approx(np.mean([t[1] for t in tops]), rel=0, abs=same)
    for name, deltas_one in deltas.items():
        m = report["per_method"][name]
        assert m["norm"] == pytest.approx(global_norm(deltas_one), rel=same)
        assert m["effective_rank_median"] == pytest.approx(
            np.median([effective_rank(d) for d in deltas_one.values()]), rel=same
        )
    # SFT and its near-copy are closer than SFT and an unrelated update
    assert report["pairs"][0]["global_cosine"] > 0.8 > abs(report["pairs"][1]["global_cosine"])
    json.dumps(json_safe(report), allow_nan=False)
    table = report_table(report)
    assert "sft" in table and "dpo" in table and "cosine" in table


def test_report_base_overlap():
    a = adapter(1)
    gen = torch.Generator().manual_seed(0)
    weights = {m: torch.randn(*d.shape, generator=gen) for m, d in a.items()}
    report = pairwise_report({"a": a, "b": adapter(2)}, k=2, base_weights=weights, base_k=3, progress=False)
    want = [base_overlap(d, base_subspace(weights[m], 3)) for m, d in a.items()]
    assert report["per_method"]["a"]["base_overlap_by_module"] == pytest.approx(want, rel=0, abs=SLACK * EPS)
    assert 0.0 < report["per_method"]["a"]["base_overlap"] < 1.0


def write_adapter(folder, deltas, base="org/base", r=4, alpha=8):
    """A PEFT-layout adapter folder (keys, config) from deltas with scale alpha / r."""
    folder.mkdir(parents=True)
    tensors = {}
    for name, d in deltas.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = d.A.float().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = d.B.float().contiguous()
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "base_model_name_or_path": base}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_cli(tmp_path, capsys):
    a = write_adapter(tmp_path / "sft", adapter(1))
    b = write_adapter(tmp_path / "rft", adapter(2, shared=adapter(1)))
    out = tmp_path / "out" / "report.json"
    assert main([str(a), str(b), "--k", "3", "--json", str(out), "--names", "S,R"]) == 0
    printed = capsys.readouterr().out
    assert "S" in printed and "cosine" in printed
    report = json.loads(out.read_text())
    assert report["methods"] == ["S", "R"] and report["base_model"] == "org/base" and report["k"] == 3
    from helpers.deltas import load_deltas

    assert report["pairs"][0]["global_cosine"] == pytest.approx(global_cosine(load_deltas(a), load_deltas(b)))


def test_cli_errors(tmp_path, capsys):
    a = write_adapter(tmp_path / "a", adapter(1))
    other = write_adapter(tmp_path / "other", adapter(2), base="org/other")
    fewer = write_adapter(tmp_path / "fewer", {k: v for k, v in adapter(3).items() if "o_proj" not in k})
    cases = [
        ([str(a), str(tmp_path / "nope")], "not a folder"),
        ([str(a), str(tmp_path)], "no adapter_config.json"),
        ([str(a), str(other)], "different base models"),
        ([str(a), str(fewer)], "different modules"),
        ([str(a)], "at least two"),
        ([str(a), str(a), "--names", "x"], "--names"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
