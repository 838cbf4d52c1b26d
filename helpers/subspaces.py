"""Factored linear algebra of low-rank updates: exact SVD, subspace angles, projections.

Every number comes from dW = s B A without forming the d_out x d_in matrix: the
thin QRs B = Q_B R_B and A^T = Q_A R_A give dW = Q_B (s R_B R_A^T) Q_A^T, so the
SVD of the r x r core is the exact SVD of dW (U = Q_B U_c, V = Q_A V_c). Pairs of
updates then only need r x r products such as U_a^T U_b. helpers.geometry builds
the delta-level comparisons and the report on top of these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from helpers.deltas import LowRankDelta, check_compatible


@dataclass
class FactoredSVD:
    """dW = U diag(S) V^T with only the nonzero singular values kept (numerical rank q)."""

    U: torch.Tensor  # d_out x q, orthonormal columns: the output side
    S: torch.Tensor  # q, descending, positive
    V: torch.Tensor  # d_in x q, orthonormal columns: the input side

    @property
    def rank(self) -> int:
        return int(self.S.numel())


def factored_svd(delta: LowRankDelta | FactoredSVD) -> FactoredSVD:
    """Exact thin SVD of s B A from two thin QRs and the SVD of the small core.

    Singular values below max(S) * max(d_out, d_in) * eps (numpy's matrix_rank
    tolerance) are dropped, so U spans exactly the column space of dW.
    """
    if isinstance(delta, FactoredSVD):
        return delta
    B, A = delta.B.to(torch.float64), delta.A.to(torch.float64)
    q_b, r_b = torch.linalg.qr(B)
    q_a, r_a = torch.linalg.qr(A.T)
    u_core, S, vh_core = torch.linalg.svd(delta.scale * (r_b @ r_a.T), full_matrices=False)
    tol = (float(S[0]) if S.numel() else 0.0) * max(delta.shape) * torch.finfo(torch.float64).eps
    keep = int((tol < S).sum()) if S.numel() and float(S[0]) > 0 else 0
    return FactoredSVD(q_b @ u_core[:, :keep], S[:keep], q_a @ vh_core[:keep].T)


def inner_product(a: LowRankDelta, b: LowRankDelta) -> float:
    """<dW_a, dW_b>_F = s_a s_b tr((B_a^T B_b)(A_b A_a^T)), with r x r products only."""
    if a.shape != b.shape:
        raise ValueError(f"inner_product: shapes differ ({a.shape} vs {b.shape}) at {a.module or b.module}")
    left = a.B.to(torch.float64).T @ b.B.to(torch.float64)
    right = a.A.to(torch.float64) @ b.A.to(torch.float64).T
    return a.scale * b.scale * float((left * right).sum())


def _ratio(num: float, den: float) -> float:
    """num / den, nan when den is 0 (a zero update has no direction)."""
    return num / den if den > 0 else float("nan")


def _layer_groups(modules: Sequence[str], deltas: dict[str, LowRankDelta]) -> dict[int, list[str]]:
    """Modules by layer index, layers ascending (-1: modules with no layer index)."""
    groups: dict[int, list[str]] = {}
    for m in modules:
        layer = deltas[m].layer
        groups.setdefault(-1 if layer is None else layer, []).append(m)
    return dict(sorted(groups.items()))


def _grouped_ratio(num: dict[str, float], den: dict[str, float], groups: dict[int, list[str]], root: bool):
    """Per group: summed num / summed den (its square root with `root`), in group order."""
    out = []
    for mods in groups.values():
        value = _ratio(sum(num[m] for m in mods), sum(den[m] for m in mods))
        out.append(math.sqrt(value) if root and not math.isnan(value) else value)
    return out


def subspace_angles(q_a: torch.Tensor, q_b: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the spans of two orthonormal d x k bases.

    Cosines from svd(Q_a^T Q_b), sines from svd(Q_b - Q_a Q_a^T Q_b); the sine is used
    below 45 degrees where arccos loses precision (Knyazev & Argentati 2002, as in scipy).
    """
    k = min(q_a.shape[1], q_b.shape[1])
    if k == 0:
        return q_a.new_zeros(0)
    if q_a.shape[1] < q_b.shape[1]:
        q_a, q_b = q_b, q_a  # project the smaller basis onto the larger
    cross = q_a.T @ q_b
    cos = torch.linalg.svdvals(cross)[:k].clamp(0.0, 1.0)
    angles = torch.arccos(cos)
    small = cos**2 >= 0.5
    if bool(small.any()):  # the d x k residual is only needed for angles below 45 degrees
        sin = torch.linalg.svdvals(q_b - q_a @ cross)[:k].flip(0).clamp(0.0, 1.0)
        angles = torch.where(small, torch.arcsin(sin), angles)
    return angles


def principal_angles(
    a: LowRankDelta | FactoredSVD, b: LowRankDelta | FactoredSVD, k: int = 10, side: str = "left"
) -> np.ndarray:
    """Angles in degrees, ascending, between the top-k singular subspaces of two updates.

    side="left" compares output directions (columns of U), side="right" input
    directions (V). k is capped at both numerical ranks (empty if either update is 0).
    """
    if side not in ("left", "right"):
        raise ValueError(f"principal_angles: side must be 'left' or 'right', got {side!r}")
    sa, sb = factored_svd(a), factored_svd(b)
    k = min(int(k), sa.rank, sb.rank)
    basis_a, basis_b = (sa.U, sb.U) if side == "left" else (sa.V, sb.V)
    return np.degrees(subspace_angles(basis_a[:, :k], basis_b[:, :k]).numpy())


READINGS = ("span", "top_k", "direction")
DEFAULT_TOP_K = 10


def _reading(reading: str | None, k: int | None) -> tuple[str, int]:
    """The reading and k a call asks for; k alone keeps its older meaning, the top-k reading."""
    if reading is None:
        reading = "span" if k is None else "top_k"
    if reading not in READINGS:
        raise ValueError(
            f"orthogonal fraction: reading must be one of {', '.join(READINGS)}, got {reading!r}"
        )
    k = DEFAULT_TOP_K if k is None else int(k)
    if k < 1:
        raise ValueError(f"orthogonal fraction: k must be positive, got {k}")
    return reading, k


def orthogonal_fraction(
    b: LowRankDelta | FactoredSVD,
    a: LowRankDelta | FactoredSVD,
    reading: str | None = None,
    k: int | None = None,
) -> float:
    """||dW_b - P_a dW_b||_F / ||dW_b||_F: the share of b outside a, in one of three readings.

    The study does not say onto what P_a projects; each reading is one answer:
    "span" (the default) onto the column space of dW_a (its numerical rank, at most r);
    "top_k" onto its top-k left singular vectors (k=10 unless given; k given without a
    reading means "top_k"); "direction" onto dW_a itself as one flattened vector, which
    is sqrt(1 - cos^2). 0 when b lies inside, 1 when orthogonal (also when a is zero);
    nan when b is zero. Factored: r x r products only (see _residual_sq).

    Why span <= direction always: X -> U_a U_a^T X is the orthogonal projection (in the
    Frobenius inner product) onto S = {X : col(X) in col(dW_a)}. dW_a lies in S, so the
    line L through dW_a is a subspace of S, and projecting onto the larger subspace
    leaves the smaller residual: ||X - P_S X|| <= ||X - P_L X||. The same holds per layer
    and globally (S the direct sum over modules, L the line of the concatenated update).
    Likewise top_k >= span (the top-k subspace lies inside the span); top_k and
    direction are not ordered.
    """
    reading, k = _reading(reading, k)
    sa, sb = factored_svd(a), factored_svd(b)
    residual_sq, norm_sq = module_residuals(sa, sb, k)[reading]
    return _ratio(math.sqrt(residual_sq), math.sqrt(norm_sq))


def module_residuals(sa: FactoredSVD, sb: FactoredSVD, k: int) -> dict[str, tuple[float, float]]:
    """(||dW_b outside a||^2, ||dW_b||^2) in each reading, and ("inner", <dW_a, dW_b>, ||dW_a||^2)."""
    cross_u = sa.U.T @ sb.U
    top = min(int(k), sa.rank)
    inner = float((sa.S[:, None] * cross_u * (sa.V.T @ sb.V) * sb.S[None, :]).sum())
    norm_a, norm_b = float((sa.S**2).sum()), float((sb.S**2).sum())
    return {
        "span": _residual_sq(sa.U, sb.U, sb.S, cross_u),
        "top_k": _residual_sq(sa.U[:, :top], sb.U, sb.S, cross_u[:top]),
        "direction": (_direction_residual_sq(inner, norm_a, norm_b), norm_b),
        "inner": (inner, norm_a),
    }


def _direction_residual_sq(inner: float, norm_a_sq: float, norm_b_sq: float) -> float:
    """||b||^2 - <a, b>^2 / ||a||^2: b's squared norm outside the line through a (all of it if a = 0).

    = ||b||^2 (1 - cos^2); it loses digits only as cos -> 1, where the fraction is ~0 anyway.
    """
    if norm_a_sq <= 0:
        return norm_b_sq
    return max(norm_b_sq - inner**2 / norm_a_sq, 0.0)


def orthogonal_fractions(
    deltas_b: dict[str, LowRankDelta],
    deltas_a: dict[str, LowRankDelta],
    reading: str | None = None,
    k: int | None = None,
) -> dict:
    """orthogonal_fraction of every module of b against a, per layer and global, in one reading.

    Per layer and global: sqrt(summed squared residuals / summed squared norms), i.e.
    the share of the flattened update outside a's per-module subspaces ("span", "top_k");
    for "direction", outside the line through a's flattened update at that level, so
    the global value is sqrt(1 - global cosine^2).
    """
    reading, k = _reading(reading, k)
    check_compatible(deltas_b, deltas_a, "b", "a")
    resid, norm, inner, norm_a = {}, {}, {}, {}
    for m in deltas_b:
        res = module_residuals(factored_svd(deltas_a[m]), factored_svd(deltas_b[m]), k)
        resid[m], norm[m] = res[reading]
        inner[m], norm_a[m] = res["inner"]
    groups = _layer_groups(list(deltas_b), deltas_b)
    everything = {"all": list(deltas_b)}
    if reading == "direction":
        by_layer = direction_fractions(inner, norm_a, norm, groups)
        overall = direction_fractions(inner, norm_a, norm, everything)[0]
    else:
        by_layer = _grouped_ratio(resid, norm, groups, root=True)
        overall = _grouped_ratio(resid, norm, everything, root=True)[0]
    return {
        "global": overall,
        "by_layer": dict(zip(groups, by_layer, strict=True)),
        "by_module": {m: math.sqrt(_ratio(resid[m], norm[m])) for m in deltas_b},
        "reading": reading,
        "k": k if reading == "top_k" else None,
    }


def direction_fractions(
    inner: dict[str, float], norm_a: dict[str, float], norm_b: dict[str, float], groups: dict
) -> list[float]:
    """Per group: the share of b's concatenated update outside the line through a's (sqrt(1 - cos^2))."""
    out = []
    for mods in groups.values():
        nb = sum(norm_b[m] for m in mods)
        res = _direction_residual_sq(sum(inner[m] for m in mods), sum(norm_a[m] for m in mods), nb)
        out.append(math.sqrt(_ratio(res, nb)) if nb > 0 else float("nan"))
    return out


def _residual_sq(
    u_a: torch.Tensor, u_b: torch.Tensor, s_b: torch.Tensor, cross: torch.Tensor
) -> tuple[float, float]:
    """Squared norms of b outside span(u_a) and of b, given cross = u_a^T u_b.

    ||S_b||^2 - ||cross S_b||^2 costs nothing more but loses digits by cancellation
    when b lies almost inside a's span; there the residual is formed directly
    (d x r), so the fraction stays accurate to ~1e-12 of ||dW_b|| everywhere.
    """
    norm_sq = float((s_b**2).sum())
    residual_sq = norm_sq - float(((cross * s_b) ** 2).sum())
    if residual_sq < 1e-6 * norm_sq:
        residual_sq = float(torch.linalg.matrix_norm((u_b - u_a @ cross) * s_b) ** 2)
    return max(residual_sq, 0.0), norm_sq


def effective_rank(a: LowRankDelta | FactoredSVD) -> float:
    """exp(entropy of the singular values normalised to sum 1) (Roy & Vetterli 2007); 0 for dW = 0."""
    S = factored_svd(a).S
    if S.numel() == 0:
        return 0.0
    p = S / S.sum()
    return float(torch.exp(-(p * torch.log(p)).sum()))


def top1_alignment(a: LowRankDelta | FactoredSVD, b: LowRankDelta | FactoredSVD) -> tuple[float, float]:
    """|<u1_a, u1_b>| (output side) and |<v1_a, v1_b>| (input side) of the top singular vectors."""
    sa, sb = factored_svd(a), factored_svd(b)
    if sa.rank == 0 or sb.rank == 0:
        return float("nan"), float("nan")
    return abs(float(sa.U[:, 0] @ sb.U[:, 0])), abs(float(sa.V[:, 0] @ sb.V[:, 0]))


def base_subspace(weight: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k left singular vectors of a dense base weight (d_out x k, float64)."""
    W = weight.detach().to(torch.float64)
    return torch.linalg.svd(W, full_matrices=False)[0][:, :k].cpu()


def base_overlap(a: LowRankDelta | FactoredSVD, base_u: torch.Tensor) -> float:
    """Fraction of ||dW||^2 inside span(base_u), e.g. the base W's top-k left singular
    vectors (the "path not taken" of Zhu et al. 2025); nan when dW = 0."""
    sa = factored_svd(a)
    inside = float(((base_u.to(sa.U).T @ sa.U * sa.S) ** 2).sum())
    return _ratio(inside, float((sa.S**2).sum()))
