"""How different are two weight updates? Exact geometry on the LoRA factors.

The delta-level comparisons (cosine, norms; per module, per layer, global) and the
all-pairs report that the book and the CLI print. The factored linear algebra they
rest on (exact SVD of s B A, principal angles, orthogonal fractions) lives in
helpers.subspaces; its public names are re-exported here.

Run `python -m helpers.geometry ADAPTER_A ADAPTER_B [...]` for a table of any
PEFT LoRA adapters of one base model.
"""

from __future__ import annotations

import itertools
import math
import statistics
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from helpers.deltas import LowRankDelta, check_compatible
from helpers.geometry_table import json_safe, report_table
from helpers.subspaces import (
    READINGS,
    FactoredSVD,
    _grouped_ratio,
    _layer_groups,
    _ratio,
    base_overlap,
    base_subspace,
    direction_fractions,
    effective_rank,
    factored_svd,
    inner_product,
    module_residuals,
    orthogonal_fraction,
    orthogonal_fractions,
    principal_angles,
    subspace_angles,
    top1_alignment,
)

from .progress import tqdm

__all__ = [
    "READINGS",
    "FactoredSVD",
    "base_overlap",
    "base_subspace",
    "cosine",
    "cosine_by_layer",
    "effective_rank",
    "factored_svd",
    "frobenius_norms",
    "global_cosine",
    "global_norm",
    "inner_product",
    "json_safe",
    "main",
    "orthogonal_fraction",
    "orthogonal_fractions",
    "module_residuals",
    "pairwise_report",
    "principal_angles",
    "report_table",
    "subspace_angles",
    "top1_alignment",
]


def cosine(a: LowRankDelta, b: LowRankDelta) -> float:
    """Cosine of the flattened updates; nan if either is zero. Invariant to scaling."""
    return _ratio(inner_product(a, b), a.frobenius_norm() * b.frobenius_norm())


def global_cosine(deltas_a: dict[str, LowRankDelta], deltas_b: dict[str, LowRankDelta]) -> float:
    """Cosine of all modules flattened together into one vector per adapter."""
    check_compatible(deltas_a, deltas_b)
    inner = sum(inner_product(deltas_a[m], deltas_b[m]) for m in deltas_a)
    return _ratio(inner, global_norm(deltas_a) * global_norm(deltas_b))


def frobenius_norms(deltas: dict[str, LowRankDelta]) -> dict[str, float]:
    """||dW||_F per module."""
    return {m: d.frobenius_norm() for m, d in deltas.items()}


def global_norm(deltas: dict[str, LowRankDelta]) -> float:
    """Norm of all modules flattened together: sqrt of the summed squared module norms."""
    return math.sqrt(sum(n**2 for n in frobenius_norms(deltas).values()))


def cosine_by_layer(deltas_a: dict[str, LowRankDelta], deltas_b: dict[str, LowRankDelta]) -> dict[int, float]:
    """Cosine of each layer's modules flattened together (layer -1: modules with no layer index)."""
    check_compatible(deltas_a, deltas_b)
    out = {}
    for layer, mods in _layer_groups(list(deltas_a), deltas_a).items():
        inner = sum(inner_product(deltas_a[m], deltas_b[m]) for m in mods)
        norm_a = math.sqrt(sum(deltas_a[m].frobenius_norm() ** 2 for m in mods))
        norm_b = math.sqrt(sum(deltas_b[m].frobenius_norm() ** 2 for m in mods))
        out[layer] = _ratio(inner, norm_a * norm_b)
    return out


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(statistics.median(finite)) if finite else float("nan")


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else float("nan")


def pairwise_report(
    deltas_by_name: dict[str, dict[str, LowRankDelta]],
    k: int = 10,
    base_weights: dict[str, torch.Tensor] | None = None,
    base_k: int = 0,
    progress: bool = True,
    threads: int | None = 1,
    top_k: int | None = None,
) -> dict:
    """Every metric for every pair of adapters, as plain JSON-serialisable data.

    Modules are visited one at a time and each adapter's SVD is computed once per
    module, then reused by all pairs. Per-module lists follow `modules`, per-layer
    lists follow `layers`. In pair (a, b), `orth_frac` is b's share outside a's
    column space and `orth_frac_rev` a's share outside b's (the "span" reading);
    `orth_frac_top_k`/`orth_frac_rev_top_k` project onto the top-`top_k` left singular
    vectors instead (top_k defaults to k, the principal angles' k), `orth_frac_direction` onto the other update's flattened direction
    (see subspaces.orthogonal_fraction). Effective ranks and angles leave out modules
    whose update is zero. With base_weights and base_k > 0, each adapter's overlap with
    the base weights' top-k left subspaces.

    `threads`: torch CPU threads for the loop (restored afterwards; None keeps the
    current setting). One by default: the r x r and d x r products gain nothing from
    threads, and on a busy machine OpenMP threads wait on each other (measured 60x
    slower with 2 threads on 2 shared cores).
    """
    with _torch_threads(threads):
        top_k = k if top_k is None else int(top_k)
        if k < 1 or top_k < 1:
            raise ValueError(f"pairwise_report: k and top_k must be positive, got {k} and {top_k}")
        return _pairwise_report(deltas_by_name, k, top_k, base_weights, base_k, progress)


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pairwise_report(deltas_by_name, k, top_k, base_weights, base_k, progress) -> dict:
    names = list(deltas_by_name)
    if len(names) < 1:
        raise ValueError("pairwise_report: no adapters given")
    first = deltas_by_name[names[0]]
    for name in names[1:]:
        check_compatible(first, deltas_by_name[name], names[0], name)
    modules = list(first)
    groups = _layer_groups(modules, first)
    pairs = list(itertools.combinations(names, 2))
    norm_sq = {n: {} for n in names}
    eff_rank = {n: {} for n in names}
    overlap = {n: {} for n in names}
    per_pair = {p: {key: {} for key in _PAIR_KEYS} for p in pairs}
    for module in tqdm(modules, desc="geometry", disable=not progress, leave=False):
        svds = {n: factored_svd(deltas_by_name[n][module]) for n in names}
        base_u = None
        if base_weights is not None and base_k > 0 and module in base_weights:
            base_u = base_subspace(base_weights[module], base_k)
        for n, s in svds.items():
            norm_sq[n][module] = float((s.S**2).sum())
            # a zero update has no rank to speak of: left out of the summaries, as from the angles'
            eff_rank[n][module] = effective_rank(s) if s.rank else float("nan")
            overlap[n][module] = base_overlap(s, base_u) if base_u is not None else float("nan")
        for a, b in pairs:
            _pair_module(svds[a], svds[b], k, top_k, per_pair[(a, b)], module)
    report = {
        "methods": names,
        "k": int(k),
        "top_k": int(top_k),
        "readings": list(READINGS),
        "modules": modules,
        "layers": list(groups),
        "per_method": {},
        "pairs": [],
    }
    for n in names:
        ranks = list(eff_rank[n].values())
        report["per_method"][n] = {
            "norm": math.sqrt(sum(norm_sq[n].values())),
            "norm_by_layer": [math.sqrt(sum(norm_sq[n][m] for m in mods)) for mods in groups.values()],
            "norm_by_module": [math.sqrt(norm_sq[n][m]) for m in modules],
            "effective_rank_mean": _mean(ranks),
            "effective_rank_median": _median(ranks),
            "effective_rank_by_module": [eff_rank[n][m] for m in modules],
        }
        if base_weights is not None and base_k > 0:
            inside = {m: overlap[n][m] * norm_sq[n][m] for m in modules if not math.isnan(overlap[n][m])}
            report["per_method"][n]["base_k"] = int(base_k)
            report["per_method"][n]["base_overlap"] = _ratio(
                sum(inside.values()), sum(norm_sq[n][m] for m in inside)
            )
            report["per_method"][n]["base_overlap_by_module"] = [overlap[n][m] for m in modules]
    everything = {"all": modules}
    for a, b in pairs:
        vals = per_pair[(a, b)]
        norms_a, norms_b = norm_sq[a], norm_sq[b]
        den = {m: math.sqrt(norms_a[m] * norms_b[m]) for m in modules}
        layer_den = [
            math.sqrt(sum(norms_a[m] for m in mods) * sum(norms_b[m] for m in mods))
            for mods in groups.values()
        ]
        entry = {
            "a": a,
            "b": b,
            "global_cosine": _ratio(
                sum(vals["inner"].values()), math.sqrt(sum(norms_a.values()) * sum(norms_b.values()))
            ),
            "cosine_by_layer": [
                _ratio(sum(vals["inner"][m] for m in mods), d)
                for mods, d in zip(groups.values(), layer_den, strict=True)
            ],
            "cosine_by_module": [_ratio(vals["inner"][m], den[m]) for m in modules],
        }
        # orth_frac: b's share outside a; orth_frac_rev: a's outside b; one suffix per reading
        for reading in READINGS:
            suffix = "" if reading == "span" else f"_{reading}"
            for key, resid, norms, other in (
                ("orth_frac", vals[f"resid_b_{reading}"], norms_b, norms_a),
                ("orth_frac_rev", vals[f"resid_a_{reading}"], norms_a, norms_b),
            ):
                if reading == "direction":
                    total = direction_fractions(vals["inner"], other, norms, everything)[0]
                    by_layer = direction_fractions(vals["inner"], other, norms, groups)
                else:
                    total = _grouped_ratio(resid, norms, everything, root=True)[0]
                    by_layer = _grouped_ratio(resid, norms, groups, root=True)
                entry[f"{key}{suffix}"] = total
                entry[f"{key}{suffix}_by_layer"] = by_layer
                entry[f"{key}{suffix}_by_module"] = [math.sqrt(_ratio(resid[m], norms[m])) for m in modules]
        for key in _SERIES:
            series = [vals[key][m] for m in modules]
            if key.startswith("angle"):
                entry[f"{key}_median"] = _median(series)
            else:
                entry[f"{key}_mean"] = _mean(series)
            entry[f"{key}_by_module"] = series
        report["pairs"].append(entry)
    return report


# per-module pair metrics: angles summarised by their median, alignments by their mean
_SERIES = ("angle_min", "angle_max", "angle_min_input", "angle_max_input", "top1_output", "top1_input")
_RESIDUALS = tuple(f"resid_{side}_{reading}" for side in "ab" for reading in READINGS)
_PAIR_KEYS = ("inner", *_RESIDUALS, *_SERIES)


def _pair_module(sa: FactoredSVD, sb: FactoredSVD, k: int, top_k: int, out: dict, module: str) -> None:
    """All pair metrics of one module from the two SVDs and r x r cross products.

    Principal angles use k capped at both updates' numerical ranks: beyond a rank there
    is no singular direction to compare (nan when either update is zero).
    """
    nan = float("nan")
    b_outside_a, a_outside_b = module_residuals(sa, sb, top_k), module_residuals(sb, sa, top_k)
    out["inner"][module] = b_outside_a["inner"][0]
    for reading in READINGS:
        out[f"resid_b_{reading}"][module] = b_outside_a[reading][0]
        out[f"resid_a_{reading}"][module] = a_outside_b[reading][0]
    cross_u, cross_v = sa.U.T @ sb.U, sa.V.T @ sb.V
    kk = min(int(k), sa.rank, sb.rank)
    for suffix, q_a, q_b in (("", sa.U, sb.U), ("_input", sa.V, sb.V)):
        angles = torch.rad2deg(subspace_angles(q_a[:, :kk], q_b[:, :kk])) if kk else None
        out[f"angle_min{suffix}"][module] = float(angles[0]) if kk else nan
        out[f"angle_max{suffix}"][module] = float(angles[-1]) if kk else nan
    both = sa.rank > 0 and sb.rank > 0
    out["top1_output"][module] = abs(float(cross_u[0, 0])) if both else nan
    out["top1_input"][module] = abs(float(cross_v[0, 0])) if both else nan


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (helpers.geometry_cli.main): the geometry table, --json and --html reports."""
    from helpers.geometry_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
