"""Which reading of the orthogonal fraction reproduces the study's own figures?

The study reports both a cosine and an orthogonal fraction for two pairs: offline GRPO
to SFT (about 0.74; 0.67) and online GRPO to SFT (0.025; 0.998), without saying onto
what the fraction projects. Its adapters are not public, so the three readings
(helpers.subspaces.orthogonal_fraction) are computed on a model of each pair with the
study's own shapes: Qwen3-4B's 36 layers of q/k/v/o, LoRA r = 32, k = 10. SFT's update
is a random rank-r update with Haar singular vectors and a geometric spectrum of the
study's effective rank (about 16); the other update is, per module, the reported cosine
times SFT's plus a random rank-r rest orthogonal to it. The direction reading follows
from the cosine alone (sqrt(1 - cos^2)); span and top-k also depend on where the rest
lies, which the model takes as unrelated to SFT's subspace, and on how the update's
norm spreads over q, k, v and o (given as the range over putting it all in one type).
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
from .progress import tqdm
from .study import load_study
from .subspaces import (
    READINGS,
    FactoredSVD,
    _grouped_ratio,
    direction_fractions,
    factored_svd,
    module_residuals,
)

# Qwen3-4B-Instruct-2507's attention (config.json: hidden_size 2560, 32 query heads and
# 8 key/value heads of head_dim 128): (d_out, d_in) of each adapted projection.
QWEN3_4B_ATTENTION = {
    "q_proj": (4096, 2560),
    "k_proj": (1024, 2560),
    "v_proj": (1024, 2560),
    "o_proj": (2560, 4096),
}
# The pairs for which the study gives both numbers: (cosine key, orthogonal-fraction key) in data/study.yaml.
STUDY_PAIRS = {
    "grpo-sft": ("global_cosine.grpo_sft_cluster", "orthogonal_fraction.grpo_sft"),
    "online_grpo-sft": ("controls.online_grpo_cosine_sft", "controls.online_grpo_orthogonal_fraction"),
}
READINGS_VERSION = 1


def study_shapes(study: Mapping[str, Any], layers: int | None = None) -> dict[str, tuple[int, int, int]]:
    """(d_out, d_in, r) of the study's q/k/v/o modules in `layers` layers (default all 36)."""
    r = int(study["setup.lora_r"]["value"])
    layers = int(study["setup.layers"]["value"]) if layers is None else int(layers)
    return {
        f"model.layers.{i}.self_attn.{p}": (*shape, r)
        for i in range(layers)
        for p, shape in QWEN3_4B_ATTENTION.items()
    }


def top_k_for(rank: int, study: Mapping[str, Any] | None = None) -> int:
    """The top-k reading's k for a LoRA rank: the study's share k/r = 10/32 of it (at least 1).

    With the study's k = 10 on a rank-8 adapter, top-k would be the whole span and the
    two readings one; the share keeps top-k a strict subspace as the study's is.
    """
    study = load_study() if study is None else study
    k, r = float(study["analyses.principal_k"]["value"]), float(study["setup.lora_r"]["value"])
    return max(1, round(int(rank) * k / r))


def reading_frame(rows: list[dict[str, Any]], geometry: Mapping[str, Any] | None = None):
    """reading_match's records as a table: the study's cosine and fraction, each reading's value
    (direction exact, span and top-k on the model), which reproduce it, and this run's three
    readings of the same pair where `geometry` (the results' geometry block) holds them."""
    import pandas as pd

    table = []
    for row in rows:
        entry = {"pair": row["pair"], "study cosine": row["cosine"], "study fraction": row["fraction"]}
        for reading, value in row["readings"].items():
            entry[f"{reading} (study model)"] = round(value["value"], 4)
        entry["reproduces the figure"] = (
            ", ".join(r for r, v in row["readings"].items() if v["reproduces"]) or "none"
        )
        closest = min(row["readings"], key=lambda r: abs(row["readings"][r]["value"] - row["fraction"]))
        entry["closest"] = closest
        for reading in READINGS:
            key = "orthogonal_fraction" + ("" if reading == "span" else f"_{reading}")
            value = ((geometry or {}).get(key) or {}).get(row["pair"])
            entry[f"{reading} (this run)"] = value
        table.append(entry)
    return pd.DataFrame(table).set_index("pair")


def geometric_spectrum(r: int, effective_rank: float) -> np.ndarray:
    """r singular values sigma_i = q^i (normalised to unit norm) whose effective rank is `effective_rank`."""
    if not 1 <= effective_rank <= r:
        raise ValueError(f"geometric_spectrum: effective rank must lie in [1, {r}], got {effective_rank}")

    def erank(q: float) -> float:
        s = q ** np.arange(r)
        p = s / s.sum()
        return float(np.exp(-(p * np.log(np.where(p > 0, p, 1.0))).sum()))

    lo, hi = 1e-9, 1.0  # erank rises from 1 to r as q goes from 0 to 1
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if erank(mid) < effective_rank else (lo, mid)
    s = ((lo + hi) / 2) ** np.arange(r)
    return s / np.linalg.norm(s)


def spectrum_update(
    d_out: int, d_in: int, sigma: np.ndarray, generator: torch.Generator, module: str | None = None
) -> LowRankDelta:
    """U diag(sigma) V^T with Haar-random orthonormal U (d_out x r) and V (d_in x r), as LoRA factors."""
    r = len(sigma)
    u, _ = torch.linalg.qr(torch.randn(d_out, r, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d_in, r, generator=generator, dtype=torch.float64))
    layer, projection = parse_module(module) if module else (None, None)
    return LowRankDelta(u * torch.as_tensor(sigma), v.T, 1.0, module, layer, projection)


def with_cosine(a: LowRankDelta, rest: LowRankDelta, cos: float) -> LowRankDelta:
    """Unit-norm cos * a/|a| + sqrt(1 - cos^2) * (rest orthogonalised against a): cosine to a exactly `cos`."""
    from .geometry import inner_product

    na, nr = a.frobenius_norm(), rest.frobenius_norm()
    rho = inner_product(a, rest) / (na * nr)
    beta = math.sqrt(1 - cos**2) / math.sqrt(1 - rho**2)
    alpha = cos - beta * rho  # the part of rest along a is taken back out through a's coefficient
    B = torch.cat([a.B * (a.scale * alpha / na), rest.B * (rest.scale * beta / nr)], 1)
    return LowRankDelta(B, torch.cat([a.A, rest.A]), 1.0, a.module, a.layer, a.projection)


def modelled_readings(
    shapes: Mapping[str, tuple[int, int, int]],
    cosine: float,
    k: int,
    effective_rank: float,
    samples: int = 2,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Each reading's global fraction of the model pair (mean and sd over samples), and its
    value with all of the update's norm in one projection type (`by_projection`)."""
    gen = torch.Generator().manual_seed(int(seed))
    types: dict[str, list[str]] = {}
    for m in shapes:
        types.setdefault(parse_module(m)[1], []).append(m)
    everything = {"all": list(shapes)}
    draws: dict[str, list] = {reading: [] for reading in READINGS}
    per_type: dict[str, dict[str, list]] = {reading: {t: [] for t in types} for reading in READINGS}
    for _ in tqdm(range(samples), desc="study model", disable=not progress, leave=False):
        resid: dict[str, dict[str, float]] = {reading: {} for reading in READINGS}
        norm, inner, norm_a = {}, {}, {}
        for m, (d_out, d_in, r) in shapes.items():
            a = spectrum_update(d_out, d_in, geometric_spectrum(r, effective_rank), gen, m)
            # the rest's spectrum does not matter (only where its columns point): plain Gaussian factors
            rest = LowRankDelta(
                torch.randn(d_out, r, generator=gen, dtype=torch.float64),
                torch.randn(r, d_in, generator=gen, dtype=torch.float64),
            )
            svd_a = FactoredSVD(a.B / a.B.norm(dim=0), a.B.norm(dim=0), a.A.T)  # a is built as U diag(s) V^T
            res = module_residuals(svd_a, factored_svd(with_cosine(a, rest, cosine)), k)
            for reading in READINGS:
                resid[reading][m], norm[m] = res[reading]
            inner[m], norm_a[m] = res["inner"]
        for reading in READINGS:
            if reading == "direction":
                total = direction_fractions(inner, norm_a, norm, everything)[0]
                by_type = direction_fractions(inner, norm_a, norm, types)
            else:
                total = _grouped_ratio(resid[reading], norm, everything, root=True)[0]
                by_type = _grouped_ratio(resid[reading], norm, types, root=True)
            draws[reading].append(total)
            for t, v in zip(types, by_type, strict=True):
                per_type[reading][t].append(v)
    return {
        reading: {
            "mean": float(np.mean(draws[reading])),
            "sd": float(np.std(draws[reading], ddof=1)) if samples > 1 else 0.0,
            "by_projection": {t: float(np.mean(v)) for t, v in per_type[reading].items()},
        }
        for reading in READINGS
    }


def _tolerance(value: float) -> float:
    """Half a unit of the last digit the study prints (0.67 -> 0.005, 0.998 -> 0.0005)."""
    text = repr(float(value))
    decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
    return 0.5 * 10.0**-decimals


# Layers the model simulates. Its modules of one type are independent and identically
# distributed, so more layers only narrow the Monte Carlo spread: at 9 (a quarter of the
# study's 36) it is about 1e-4, a fifth of the study's last-digit tolerance for 0.998.
MODEL_LAYERS = 9


def reading_match(
    study: Mapping[str, Any] | None = None,
    samples: int = 2,
    seed: int = 0,
    layers: int = MODEL_LAYERS,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One record per study pair: its cosine and fraction, each reading's value on the model
    (direction exact), the range over projection types, and whether it reproduces the figure
    (within half a unit of its last printed digit). Cached like the chance baseline."""
    study = load_study() if study is None else study
    shapes = study_shapes(study, layers)
    k = int(study["analyses.principal_k"]["value"])
    erank = float(study["effective_rank.sft_rft_dft_rift"]["value"])
    rows = []
    for pair, (cos_key, frac_key) in STUDY_PAIRS.items():
        cos, frac = float(study[cos_key]["value"]), float(study[frac_key]["value"])
        key = stable_hash(
            {
                "shapes": shapes,
                "k": k,
                "erank": erank,
                "cos": cos,
                "samples": samples,
                "seed": seed,
                "v": READINGS_VERSION,
            }
        )
        path = Path(cache_dir if cache_dir is not None else runs_root() / "chance") / f"readings-{key}.json"
        if path.is_file():
            model = read_json(path)
        else:
            model = modelled_readings(shapes, cos, k, erank, samples, seed, progress)
            atomic_write_json(path, model)
        tol = _tolerance(frac)
        readings = {}
        for reading in READINGS:
            value = math.sqrt(1 - cos**2) if reading == "direction" else model[reading]["mean"]
            span = list(model[reading]["by_projection"].values())
            readings[reading] = {
                "value": value,
                "sd": 0.0 if reading == "direction" else model[reading]["sd"],
                "range": [value, value] if reading == "direction" else [min(span), max(span)],
                "reproduces": abs(value - frac) <= tol,
                "within_range": (min(span) - tol <= frac <= max(span) + tol)
                if reading != "direction"
                else None,
            }
        rows.append(
            {"pair": pair, "cosine": cos, "fraction": frac, "tolerance": tol, "k": k, "readings": readings}
        )
    return rows


def match_markdown(rows: list[dict[str, Any]]) -> str:
    """One sentence per study pair, from reading_match's records: what each reading gives and
    which reproduce the study's figure."""
    lines = []
    for row in rows:
        values = ", ".join(
            f"{reading} {v['value']:.4f}"
            + ("" if reading == "direction" else f" ({v['range'][0]:.4f} to {v['range'][1]:.4f})")
            for reading, v in row["readings"].items()
        )
        hits = [r for r, v in row["readings"].items() if v["reproduces"]]
        verdict = f"reproduced by {' and '.join(hits)}" if hits else "reproduced by no reading"
        lines.append(
            f"- **{row['pair']}** (study: cosine {row['cosine']:g}, orthogonal fraction {row['fraction']:g}, "
            f"tolerance {row['tolerance']:g}): {values}; {verdict}."
        )
    note = (
        "Span and top-k are computed on the model pair (in brackets: with all of the update in one "
        "projection type, q/k/v/o); direction is exact, sqrt(1 - cos^2)."
    )
    return "\n".join(lines) + "\n\n" + note
