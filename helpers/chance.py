"""Chance level of every geometry measure: what two unrelated updates of the same shapes give.

"35% orthogonal" means little until it is set beside what two independent random updates
would show. Here each module's random update is s B A with Gaussian factors of the
module's shape and LoRA rank, scaled to unit Frobenius norm so every module weighs the
same in global measures; the pair (a, b) is drawn independently. Gaussian factors make
dW invariant under rotations of its input and output spaces, which gives exact
expectations for several measures (`analytic`); the others, and the spread of all, come
from seeded sampling through the same `pairwise_report` the real adapters go through,
cached on disk by a key of the shapes, rank, k, seed and number of samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import atomic_write_json, read_json, runs_root, stable_hash
from .deltas import LowRankDelta, parse_module
from .geometry import pairwise_report
from .progress import tqdm
from .subspaces import factored_svd, subspace_angles

# Bump when the sampling or the measures change, so cached baselines are not reused.
CHANCE_VERSION = 1
# Global measures of one sample (a pair of random adapters), read off the pair's report entry.
MEASURES = (
    "global_cosine",
    "angle_min_median",
    "angle_max_median",
    "orth_frac",
    "orth_frac_top_k",
    "orth_frac_direction",
    "top1_output_mean",
    "top1_input_mean",
)
LAYER_MEASURES = (
    "cosine_by_layer",
    "orth_frac_by_layer",
    "orth_frac_top_k_by_layer",
    "orth_frac_direction_by_layer",
)
Shapes = Mapping[str, tuple[int, int, int]]


def update_shapes(deltas: Mapping[str, LowRankDelta]) -> dict[str, tuple[int, int, int]]:
    """(d_out, d_in, LoRA rank) of each module of an adapter: all a chance baseline depends on."""
    return {m: (*d.shape, d.rank) for m, d in deltas.items()}


def random_adapter(shapes: Shapes, generator: torch.Generator) -> dict[str, LowRankDelta]:
    """Independent Gaussian LoRA factors per module, each update scaled to ||dW||_F = 1."""
    out = {}
    for module, (d_out, d_in, r) in shapes.items():
        B = torch.randn(int(d_out), int(r), generator=generator, dtype=torch.float64)
        A = torch.randn(int(r), int(d_in), generator=generator, dtype=torch.float64)
        delta = LowRankDelta(B, A, 1.0, module=module)
        layer, projection = parse_module(module)
        out[module] = LowRankDelta(B, A, 1.0 / delta.frobenius_norm(), module, layer, projection)
    return out


def sample_pair(
    shapes: Shapes, k: int, generator: torch.Generator, top_k: int | None = None
) -> dict[str, Any]:
    """Every measure of one pair of independent random adapters (and per-module angle cosines)."""
    a, b = random_adapter(shapes, generator), random_adapter(shapes, generator)
    report = pairwise_report({"a": a, "b": b}, k=k, progress=False, top_k=top_k)
    (entry,) = report["pairs"]
    out = {key: entry[key] for key in (*MEASURES, *LAYER_MEASURES)}
    out["effective_rank_median"] = report["per_method"]["a"]["effective_rank_median"]
    cos2 = []  # sum of squared cosines of the principal angles per module: tr(P_a P_b)
    for m in shapes:
        sa, sb = factored_svd(a[m]), factored_svd(b[m])
        kk = min(int(k), sa.rank, sb.rank)
        cos2.append(float((torch.cos(subspace_angles(sa.U[:, :kk], sb.U[:, :kk])) ** 2).sum()))
    out["angle_cos2_sum_by_module"] = cos2
    return out


def analytic(shapes: Shapes, k: int, top_k: int | None = None) -> dict[str, float]:
    """Exact expectations under independent rotation-invariant unit-norm module updates.

    Per module, with b independent of a and invariant under rotations of both sides,
    E[<a, b>^2] = 1 / (d_out d_in) and E[||P b||^2] = rank(P) / d_out for a fixed
    projector P on the output side. Hence, over M unit-norm modules:
    E[global cosine] = 0, E[global cosine^2] = sum 1 / (d_out d_in) / M^2,
    E[span fraction^2] = mean of 1 - rank(a) / d_out, top-k the same with min(top_k, rank),
    E[direction fraction^2] = 1 - E[global cosine^2], and for two random k-dimensional
    output subspaces E[sum of cos^2 of the principal angles] = k^2 / d_out.
    """
    dims = [(int(o), int(i), min(int(r), int(o), int(i))) for o, i, r in shapes.values()]
    n = len(dims)
    cos2 = sum(1.0 / (o * i) for o, i, _ in dims) / n**2
    top = [min(int(k), q) for _, _, q in dims]
    reading = [min(int(k if top_k is None else top_k), q) for _, _, q in dims]
    return {
        "global_cosine": 0.0,
        "global_cosine_sq": cos2,
        "orth_frac_sq": sum(1 - q / o for o, _, q in dims) / n,
        "orth_frac_top_k_sq": sum(1 - t / o for (o, _, _), t in zip(dims, reading, strict=True)) / n,
        "orth_frac_direction_sq": 1 - cos2,
        "angle_cos2_sum_mean": sum(t * t / o for (o, _, _), t in zip(dims, top, strict=True)) / n,
    }


def _summary(values: list[float]) -> dict[str, float]:
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return {"mean": float("nan"), "sd": float("nan"), "lo": float("nan"), "hi": float("nan")}
    return {
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "lo": float(np.quantile(x, 0.05)),
        "hi": float(np.quantile(x, 0.95)),
    }


def chance_baseline(
    shapes: Shapes,
    k: int = 10,
    seed: int = 0,
    samples: int = 64,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    top_k: int | None = None,
) -> dict[str, Any]:
    """Mean, sd and 5-95% range of each measure over `samples` pairs of random adapters.

    `measures[name]` are the global numbers, `by_layer[name]` the same per layer (lists in
    layer order), `analytic` the exact expectations. `top_k` is the top-k reading's k (default
    k, the principal angles'). Cached as JSON under `cache_dir` (default <runs>/chance) by a
    hash of the shapes, k, top_k, seed, samples and CHANCE_VERSION.
    """
    if samples < 2:
        raise ValueError(f"chance_baseline: need at least 2 samples for a spread, got {samples}")
    top_k = int(k if top_k is None else top_k)
    if k < 1 or top_k < 1:
        raise ValueError(f"chance_baseline: k must be positive, got k={k}, top_k={top_k}")
    shapes = {m: tuple(int(x) for x in s) for m, s in shapes.items()}
    key = stable_hash(
        {
            "shapes": shapes,
            "k": int(k),
            "top_k": top_k,
            "seed": int(seed),
            "samples": int(samples),
            "v": CHANCE_VERSION,
        }
    )
    path = Path(cache_dir if cache_dir is not None else runs_root() / "chance") / f"chance-{key}.json"
    if path.is_file():
        return read_json(path)
    generator = torch.Generator().manual_seed(int(seed))
    draws = [
        sample_pair(shapes, k, generator, top_k)
        for _ in tqdm(range(samples), desc="chance baseline", disable=not progress, leave=False)
    ]
    result = {
        "key": key,
        "k": int(k),
        "top_k": top_k,
        "seed": int(seed),
        "samples": int(samples),
        "modules": len(shapes),
        "ranks": sorted({s[2] for s in shapes.values()}),
        "measures": {m: _summary([d[m] for d in draws]) for m in (*MEASURES, "effective_rank_median")},
        "by_layer": {
            m: {
                stat: [_summary([d[m][i] for d in draws])[stat] for i in range(len(draws[0][m]))]
                for stat in ("mean", "lo", "hi")
            }
            for m in LAYER_MEASURES
        },
        # squares and angle cosines: the sample side of `analytic`'s exact expectations
        "squares": {
            f"{m}_sq": _summary([d[m] ** 2 for d in draws])
            for m in ("global_cosine", "orth_frac", "orth_frac_top_k", "orth_frac_direction")
        },
        "angle_cos2_sum": _summary([float(np.mean(d["angle_cos2_sum_by_module"])) for d in draws]),
        "analytic": analytic(shapes, k, top_k),
    }
    atomic_write_json(path, result)
    return result


# (label, key in the results' geometry block, key in the chance baseline, ordered pair?)
BESIDE = (
    ("global cosine", "global_cosine", "global_cosine", False),
    ("median smallest angle (deg)", "median_smallest_angle", "angle_min_median", False),
    ("median largest angle (deg)", "median_largest_angle", "angle_max_median", False),
    ("orthogonal fraction, span", "orthogonal_fraction", "orth_frac", True),
    ("orthogonal fraction, top-k", "orthogonal_fraction_top_k", "orth_frac_top_k", True),
    ("orthogonal fraction, direction", "orthogonal_fraction_direction", "orth_frac_direction", True),
)


def beside_chance(
    geometry: Mapping[str, Any], chance: Mapping[str, Any], pairs: list[str], floor: str = "sft-sft_order"
):
    """Each measure of each "b-a" pair (b outside a for the ordered fractions) beside the noise
    floor (the same measure for `floor`, a method and its own rerun) and the chance level."""
    import pandas as pd

    def lookup(table: Mapping[str, Any], pair: str, ordered: bool):
        a, b = pair.split("-", 1)
        return table.get(pair, None if ordered else table.get(f"{b}-{a}"))

    rows = []
    rerun = "-".join(reversed(floor.split("-", 1)))  # the rerun outside the method, for fractions
    for label, key, chance_key, ordered in BESIDE:
        table = geometry.get(key) or {}
        stats = chance["measures"][chance_key]
        for pair in pairs:
            rows.append(
                {
                    "measure": label,
                    "pair": pair,
                    "ours": lookup(table, pair, ordered),
                    "noise floor": lookup(table, rerun if ordered else floor, ordered),
                    "chance mean": stats["mean"],
                    "chance 5%": stats["lo"],
                    "chance 95%": stats["hi"],
                }
            )
    return pd.DataFrame(rows).set_index(["measure", "pair"])


def exact_vs_sampled(chance: Mapping[str, Any]):
    """The sampled means of the measures with an exact expectation, beside it (a check of the sampler)."""
    import pandas as pd

    exact = chance["analytic"]
    rows = {name: {"sampled": s["mean"], "sd of the mean": s["sd"] / math.sqrt(chance["samples"]), "exact": exact[name]}
            for name, s in chance["squares"].items()}  # fmt: skip
    s = chance["angle_cos2_sum"]
    rows["principal angles: sum cos^2, mean over modules"] = {
        "sampled": s["mean"],
        "sd of the mean": s["sd"] / math.sqrt(chance["samples"]),
        "exact": exact["angle_cos2_sum_mean"],
    }
    return pd.DataFrame.from_dict(rows, orient="index")
