"""Factored geometry against a dense reference (numpy SVD, scipy.linalg.subspace_angles)."""

import json
import math

import numpy as np
import pytest
import scipy.linalg
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


def random_delta(d_out, d_in, r, rank=None, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    B = torch.randn(d_out, r, generator=gen, dtype=torch.float64)
    A = torch.randn(r, d_in, generator=gen, dtype=torch.float64)
    if rank is not None and rank < r:  # B's extra columns are combinations of the first `rank`
        B[:, rank:] = B[:, :rank] @ torch.randn(rank, r - rank, generator=gen, dtype=torch.float64)
    return LowRankDelta(B, A, scale)


def dense_svd(delta):
    W = delta.dense().numpy()
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    q = np.linalg.matrix_rank(W)
    return U[:, :q], S[:q], Vt[:q].T


def dense_angles(a, b, k, side="left"):
    ua, _, va = dense_svd(a)
    ub, _, vb = dense_svd(b)
    qa, qb = (ua, ub) if side == "left" else (va, vb)
    k = min(k, qa.shape[1], qb.shape[1])
    return np.sort(np.degrees(scipy.linalg.subspace_angles(qa[:, :k], qb[:, :k])))


def dense_orth(b, a):
    ua, _, _ = dense_svd(a)
    Wb = b.dense().numpy()
    return np.linalg.norm(Wb - ua @ (ua.T @ Wb)) / np.linalg.norm(Wb)


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
    np.testing.assert_allclose(svd.S.numpy(), S, rtol=1e-10)
    torch.testing.assert_close(svd.U @ torch.diag(svd.S) @ svd.V.T, delta.dense(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(svd.U.T @ svd.U, torch.eye(rank, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("d_out,d_in,r,rank", SHAPES)
@pytest.mark.parametrize("k", [2, 4, 10])
def test_against_dense_reference(d_out, d_in, r, rank, k):
    a = random_delta(d_out, d_in, r, rank, seed=2)
    b = random_delta(d_out, d_in, r, rank, seed=3, scale=-0.5)
    # share a component so the angles are not all near 90 degrees
    b = LowRankDelta(b.B + 0.8 * a.B, b.A + 0.5 * a.A, b.scale)
    Wa, Wb = a.dense().numpy(), b.dense().numpy()
    assert cosine(a, b) == pytest.approx(np.sum(Wa * Wb) / np.linalg.norm(Wa) / np.linalg.norm(Wb), rel=1e-10)
    for side in ("left", "right"):
        got = principal_angles(a, b, k=k, side=side)
        want = dense_angles(a, b, k, side)
        assert len(got) == min(k, rank)
        assert np.all(np.diff(got) >= 0)
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7)
    assert orthogonal_fraction(b, a) == pytest.approx(dense_orth(b, a), rel=1e-7, abs=1e-12)
    S = dense_svd(a)[1]
    p = S / S.sum()
    assert effective_rank(a) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-10)
    (ua, _, va), (ub, _, vb) = dense_svd(a), dense_svd(b)
    out, inp = top1_alignment(a, b)
    assert out == pytest.approx(abs(ua[:, 0] @ ub[:, 0]), rel=1e-8)
    assert inp == pytest.approx(abs(va[:, 0] @ vb[:, 0]), rel=1e-8)


@pytest.mark.parametrize(
    "theta,phi", [(0.0, 0.0), (0.3, 1.1), (np.pi / 4, 0.2), (1.2, np.pi / 2), (np.pi / 2, 0.7)]
)
def test_rank1_known_angles(theta, phi):
    e = np.eye(6)
    f = np.eye(9)
    a = rank1(e[0], f[0], scale=3.0)
    b = rank1(np.cos(theta) * e[0] + np.sin(theta) * e[1], np.cos(phi) * f[0] + np.sin(phi) * f[1], scale=0.5)
    assert cosine(a, b) == pytest.approx(np.cos(theta) * np.cos(phi), abs=1e-12)
    assert principal_angles(a, b, k=10) == pytest.approx([np.degrees(theta)], abs=1e-9)
    assert principal_angles(a, b, k=10, side="right") == pytest.approx([np.degrees(phi)], abs=1e-9)
    assert orthogonal_fraction(b, a) == pytest.approx(np.sin(theta), abs=1e-12)
    assert top1_alignment(a, b) == pytest.approx((abs(np.cos(theta)), abs(np.cos(phi))), abs=1e-12)


def test_identical_orthogonal_and_scaled():
    a = random_delta(30, 20, 4, seed=4)
    np.testing.assert_allclose(principal_angles(a, a, k=4), 0.0, atol=1e-6)
    assert cosine(a, a) == pytest.approx(1.0, abs=1e-12)
    scaled = LowRankDelta(a.B * 3.0, a.A, a.scale * 7.0)
    assert cosine(a, scaled) == pytest.approx(1.0, abs=1e-12)
    flipped = LowRankDelta(a.B, a.A, -a.scale)
    assert cosine(a, flipped) == pytest.approx(-1.0, abs=1e-12)
    np.testing.assert_allclose(principal_angles(a, flipped, k=4), 0.0, atol=1e-6)
    # b's columns orthogonal to a's: project a random B off a's column space
    gen = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(a.B)
    Bb = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    Bb = Bb - q @ (q.T @ Bb)
    b = LowRankDelta(Bb, torch.randn(3, 20, generator=gen, dtype=torch.float64), 1.0)
    np.testing.assert_allclose(principal_angles(a, b, k=3), 90.0, atol=1e-9)
    assert orthogonal_fraction(b, a) == pytest.approx(1.0, abs=1e-12)
    assert cosine(a, b) == pytest.approx(0.0, abs=1e-12)


def test_orthogonal_fraction_in_span():
    a = random_delta(25, 18, 5, seed=6)
    gen = torch.Generator().manual_seed(7)
    inside = LowRankDelta(a.B @ torch.randn(5, 3, generator=gen, dtype=torch.float64), a.A[:3] * 0 + 1.0, 0.3)
    assert orthogonal_fraction(inside, a) == pytest.approx(0.0, abs=1e-12)
    # top-k projection: with k below a's rank, some of b falls outside
    u = dense_svd(a)[0][:, :2]
    Wb = inside.dense().numpy()
    want = np.linalg.norm(Wb - u @ (u.T @ Wb)) / np.linalg.norm(Wb)
    assert 0.01 < want and orthogonal_fraction(inside, a, k=2) == pytest.approx(want, rel=1e-8)


def test_effective_rank_equal_singular_values():
    gen = torch.Generator().manual_seed(8)
    q_out, _ = torch.linalg.qr(torch.randn(40, 6, generator=gen, dtype=torch.float64))
    q_in, _ = torch.linalg.qr(torch.randn(30, 6, generator=gen, dtype=torch.float64))
    assert effective_rank(LowRankDelta(q_out, q_in.T, 2.5)) == pytest.approx(6.0, rel=1e-12)
    assert effective_rank(LowRankDelta(q_out[:, :1], q_in.T[:1], 1.0)) == pytest.approx(1.0)


def test_zero_delta():
    zero = LowRankDelta(torch.zeros(10, 4, dtype=torch.float64), torch.ones(4, 8, dtype=torch.float64), 2.0)
    a = random_delta(10, 8, 4, seed=9)
    assert math.isnan(cosine(zero, a))
    assert principal_angles(zero, a).size == 0
    assert effective_rank(zero) == 0.0
    assert orthogonal_fraction(a, zero) == pytest.approx(1.0)
    assert math.isnan(orthogonal_fraction(zero, a))


def test_base_overlap_dense():
    gen = torch.Generator().manual_seed(10)
    W = torch.randn(20, 14, generator=gen, dtype=torch.float64)
    a = random_delta(20, 14, 4, seed=11)
    uk = np.linalg.svd(W.numpy())[0][:, :5]
    Wa = a.dense().numpy()
    assert base_overlap(a, base_subspace(W, 5)) == pytest.approx(
        np.linalg.norm(uk.T @ Wa) ** 2 / np.linalg.norm(Wa) ** 2, rel=1e-10
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
    assert global_cosine(a, b) == pytest.approx(fa @ fb / np.linalg.norm(fa) / np.linalg.norm(fb), rel=1e-10)
    assert global_norm(a) == pytest.approx(np.linalg.norm(fa), rel=1e-12)
    by_layer = cosine_by_layer(a, b)
    for layer in (0, 1):
        la = flat({k: v for k, v in a.items() if v.layer == layer})
        lb = flat({k: v for k, v in b.items() if v.layer == layer})
        assert by_layer[layer] == pytest.approx(la @ lb / np.linalg.norm(la) / np.linalg.norm(lb), rel=1e-10)
    with pytest.raises(AdapterError, match="different modules"):
        global_cosine(a, {k: v for k, v in b.items() if "q_proj" not in k})


def test_orthogonal_fractions_global_and_by_layer():
    a = adapter(1)
    b = adapter(2, shared=a)
    result = orthogonal_fractions(b, a)
    resid = {m: (dense_orth(b[m], a[m]) * b[m].frobenius_norm()) ** 2 for m in a}
    assert result["global"] == pytest.approx(math.sqrt(sum(resid.values())) / global_norm(b), rel=1e-8)
    for layer in (0, 1):
        mods = [m for m in a if a[m].layer == layer]
        want = math.sqrt(sum(resid[m] for m in mods) / sum(b[m].frobenius_norm() ** 2 for m in mods))
        assert result["by_layer"][layer] == pytest.approx(want, rel=1e-8)
    assert result["by_module"] == pytest.approx({m: dense_orth(b[m], a[m]) for m in a}, rel=1e-8)
    assert 0.05 < result["global"] < 0.95


def test_pairwise_report_against_dense():
    base = adapter(1)
    deltas = {"sft": base, "rft": adapter(2, shared=base), "dpo": adapter(3)}
    threads = torch.get_num_threads()
    report = pairwise_report(deltas, k=3, progress=False, threads=1)
    assert torch.get_num_threads() == threads  # the loop's thread setting is restored
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [("sft", "rft"), ("sft", "dpo"), ("rft", "dpo")]
    assert report["layers"] == [0, 1] and report["modules"] == list(base)
    for pair in report["pairs"]:
        a, b = deltas[pair["a"]], deltas[pair["b"]]
        assert pair["global_cosine"] == pytest.approx(global_cosine(a, b), rel=1e-10)
        assert pair["cosine_by_layer"] == pytest.approx(list(cosine_by_layer(a, b).values()), rel=1e-10)
        mins = [dense_angles(a[m], b[m], 3)[0] for m in a]
        maxs = [dense_angles(a[m], b[m], 3)[-1] for m in a]
        assert pair["angle_min_median"] == pytest.approx(np.median(mins), rel=1e-7)
        assert pair["angle_max_median"] == pytest.approx(np.median(maxs), rel=1e-7)
        maxs_in = [dense_angles(a[m], b[m], 3, "right")[-1] for m in a]
        assert pair["angle_max_input_median"] == pytest.approx(np.median(maxs_in), rel=1e-7)
        # global orthogonal fraction: summed squared residuals over summed squared norms
        resid = sum((dense_orth(b[m], a[m]) * b[m].frobenius_norm()) ** 2 for m in a)
        assert pair["orth_frac"] == pytest.approx(math.sqrt(resid / global_norm(b) ** 2), rel=1e-7)
        assert pair["orth_frac_by_module"] == pytest.approx([dense_orth(b[m], a[m]) for m in a], rel=1e-7)
        resid_rev = sum((dense_orth(a[m], b[m]) * a[m].frobenius_norm()) ** 2 for m in a)
        assert pair["orth_frac_rev"] == pytest.approx(math.sqrt(resid_rev / global_norm(a) ** 2), rel=1e-7)
        tops = [top1_alignment(a[m], b[m]) for m in a]
        assert pair["top1_output_mean"] == pytest.approx(np.mean([t[0] for t in tops]), rel=1e-10)
        assert pair["top1_input_mean"] == pytest.approx(np.mean([t[1] for t in tops]), rel=1e-10)
    for name, deltas_one in deltas.items():
        m = report["per_method"][name]
        assert m["norm"] == pytest.approx(global_norm(deltas_one), rel=1e-12)
        assert m["effective_rank_median"] == pytest.approx(
            np.median([effective_rank(d) for d in deltas_one.values()])
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
    assert report["per_method"]["a"]["base_overlap_by_module"] == pytest.approx(want, rel=1e-10)
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
