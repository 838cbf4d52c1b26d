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


def orthogonal_fraction(
    b: LowRankDelta | FactoredSVD, a: LowRankDelta | FactoredSVD, k: int | None = None
) -> float:
    """||dW_b - P_a dW_b||_F / ||dW_b||_F: the share of b outside a's output subspace.

    P_a projects onto the full column space of dW_a (its numerical rank, at most r),
    or onto its top-k left singular vectors when k is given. 0 when b's columns lie
    in a's span, 1 when orthogonal; nan when b is zero. Computed as
    sqrt(||S_b||^2 - ||U_a^T U_b S_b||^2) from r x r products (see _residual_sq).
    """
    sa, sb = factored_svd(a), factored_svd(b)
    u_a = sa.U if k is None else sa.U[:, :k]
    residual_sq, norm_sq = _residual_sq(u_a, sb.U, sb.S, u_a.T @ sb.U)
    return _ratio(math.sqrt(residual_sq), math.sqrt(norm_sq))


def orthogonal_fractions(
    deltas_b: dict[str, LowRankDelta], deltas_a: dict[str, LowRankDelta], k: int | None = None
) -> dict:
    """orthogonal_fraction of every module of b against a, per layer and global.

    Per layer and global: sqrt(summed squared residuals / summed squared norms), i.e.
    the share of the flattened update outside a's per-module output subspaces.
    """
    check_compatible(deltas_b, deltas_a, "b", "a")
    resid, norm = {}, {}
    for m in deltas_b:
        sa, sb = factored_svd(deltas_a[m]), factored_svd(deltas_b[m])
        u_a = sa.U if k is None else sa.U[:, :k]
        resid[m], norm[m] = _residual_sq(u_a, sb.U, sb.S, u_a.T @ sb.U)
    groups = _layer_groups(list(deltas_b), deltas_b)
    return {
        "global": math.sqrt(_ratio(sum(resid.values()), sum(norm.values()))),
        "by_layer": dict(zip(groups, _grouped_ratio(resid, norm, groups, root=True), strict=True)),
        "by_module": {m: math.sqrt(_ratio(resid[m], norm[m])) for m in deltas_b},
    }


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
