"""Factored vs dense geometry on adapters shaped like the paper's (Qwen3-4B, LoRA r=32 on q/k/v/o).

Six synthetic adapters share components (so cosines are not all ~0); the factored
pairwise report (all 15 pairs, 144 modules, every metric) is timed whole, and the
dense route (form dW, numpy SVD, scipy.linalg.subspace_angles, dense projections)
on a subset of layers and pairs, extrapolated to the full report (the dense route
takes about an hour in full on two cores). Every factored number on the subset is
checked against the dense one.

    .venv/bin/python benchmarks/bench_geometry.py [--layers 1] [--dense-pairs 1] [--k 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from pathlib import Path


# OpenBLAS (numpy, scipy) reads its thread count once, when it loads: set it first.
def _threads_arg(argv: list[str], default: str = "2") -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
    return default


_THREADS = _threads_arg(sys.argv)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.deltas import LowRankDelta  # noqa: E402
from helpers.geometry import pairwise_report  # noqa: E402

# Qwen3-4B attention: (d_out, d_in) of each LoRA target
SHAPES = {"q_proj": (4096, 2560), "k_proj": (1024, 2560), "v_proj": (1024, 2560), "o_proj": (2560, 4096)}
METHODS = ("sft", "rft", "rift", "grpo", "dft", "dpo")
# weight of the shared output factor per method: the first three are nearly colinear, dpo nearly orthogonal
SHARED = {"sft": 1.0, "rft": 0.95, "rift": 0.9, "grpo": 0.6, "dft": 0.45, "dpo": 0.05}


def synthetic_adapters(n_layers: int = 36, r: int = 32, scale: float = 2.0, seed: int = 0):
    """Six adapters: B = w_m B0 + noise, A = A0 + noise (a shared init makes the input side agree)."""
    rng = np.random.default_rng(seed)
    adapters = {m: {} for m in METHODS}
    for layer in range(n_layers):
        for proj, (d_out, d_in) in SHAPES.items():
            name = f"model.layers.{layer}.self_attn.{proj}"
            B0 = rng.standard_normal((d_out, r)) / math.sqrt(d_out)
            A0 = rng.standard_normal((r, d_in)) / math.sqrt(d_in)
            for m in METHODS:
                B = SHARED[m] * B0 + 0.3 * rng.standard_normal((d_out, r)) / math.sqrt(d_out)
                A = A0 + 0.3 * rng.standard_normal((r, d_in)) / math.sqrt(d_in)
                delta = LowRankDelta(torch.from_numpy(B), torch.from_numpy(A), scale, name, layer, proj)
                adapters[m][name] = delta
    return adapters


def dense_route(adapters, modules, pairs, k):
    """Every metric from dense matrices: returns per-module values and the time of each part."""
    methods = sorted({m for pair in pairs for m in pair}, key=METHODS.index)
    svd = {}
    t0 = time.perf_counter()
    for module in modules:
        for m in methods:
            W = adapters[m][module].dense().numpy()
            U, S, Vt = np.linalg.svd(W, full_matrices=False)
            q = int((S > S[0] * max(W.shape) * np.finfo(np.float64).eps).sum())
            svd[(m, module)] = (W, U[:, :q], S[:q], Vt[:q].T)
    t_svd = time.perf_counter() - t0
    values = {}
    for m in methods:
        for module in modules:
            _, _, S, _ = svd[(m, module)]
            p = S / S.sum()
            values[(m, module, "norm")] = float(np.sqrt((S**2).sum()))
            values[(m, module, "effective_rank")] = float(np.exp(-(p * np.log(p)).sum()))
    t0 = time.perf_counter()
    for a, b in pairs:
        for module in modules:
            Wa, Ua, _, Va = svd[(a, module)]
            Wb, Ub, _, Vb = svd[(b, module)]
            key = (a, b, module)
            values[key + ("cosine",)] = float(np.sum(Wa * Wb) / np.linalg.norm(Wa) / np.linalg.norm(Wb))
            left = np.sort(np.degrees(scipy.linalg.subspace_angles(Ua[:, :k], Ub[:, :k])))
            right = np.sort(np.degrees(scipy.linalg.subspace_angles(Va[:, :k], Vb[:, :k])))
            values[key + ("angle_min",)], values[key + ("angle_max",)] = left[0], left[-1]
            values[key + ("angle_min_input",)], values[key + ("angle_max_input",)] = right[0], right[-1]
            values[key + ("orth_frac",)] = float(np.linalg.norm(Wb - Ua @ (Ua.T @ Wb)) / np.linalg.norm(Wb))
            values[key + ("orth_frac_rev",)] = float(
                np.linalg.norm(Wa - Ub @ (Ub.T @ Wa)) / np.linalg.norm(Wa)
            )
            values[key + ("top1_output",)] = abs(float(Ua[:, 0] @ Ub[:, 0]))
            values[key + ("top1_input",)] = abs(float(Va[:, 0] @ Vb[:, 0]))
    t_pairs = time.perf_counter() - t0
    return values, t_svd, t_pairs, methods


def factored_values(report, modules, pairs):
    """The same per-module numbers read from the factored report."""
    index = {m: i for i, m in enumerate(report["modules"])}
    values = {}
    for m, stats in report["per_method"].items():
        for module in modules:
            values[(m, module, "norm")] = stats["norm_by_module"][index[module]]
            values[(m, module, "effective_rank")] = stats["effective_rank_by_module"][index[module]]
    by_pair = {(p["a"], p["b"]): p for p in report["pairs"]}
    keys = (
        "cosine",
        "angle_min",
        "angle_max",
        "angle_min_input",
        "angle_max_input",
        "orth_frac",
        "orth_frac_rev",
    )
    keys += ("top1_output", "top1_input")
    for a, b in pairs:
        for module in modules:
            for key in keys:
                values[(a, b, module, key)] = by_pair[(a, b)][f"{key}_by_module"][index[module]]
    return values


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=1, help="layers on the dense route (default 1 of 36)")
    parser.add_argument(
        "--dense-pairs", type=int, default=1, help="pairs on the dense route (default 1 of 15)"
    )
    parser.add_argument("--k", type=int, default=10, help="top-k for principal angles (the study's 10)")
    parser.add_argument("--repeats", type=int, default=1, help="factored report runs; the fastest is kept")
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads for torch and OpenBLAS (default 2)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"threads: torch {torch.get_num_threads()}, OpenBLAS {os.environ['OPENBLAS_NUM_THREADS']} "
        "(the factored report runs its loop on 1 torch thread, see pairwise_report)"
    )
    n_layers = 36
    t0 = time.perf_counter()
    adapters = synthetic_adapters(n_layers)
    print(
        f"built 6 synthetic adapters (36 layers x q/k/v/o, r=32, scale 2) in {time.perf_counter() - t0:.1f} s"
    )

    times = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        report = pairwise_report(adapters, k=args.k, progress=False)
        times.append(time.perf_counter() - t0)
    t_factored = min(times)
    print(f"factored report: 15 pairs x 144 modules, all metrics: {t_factored:.2f} s")

    all_pairs = list(itertools.combinations(METHODS, 2))
    pairs = all_pairs[: max(1, min(args.dense_pairs, len(all_pairs)))]
    layers = max(1, min(args.layers, n_layers))
    modules = [m for m in report["modules"] if int(m.split(".")[2]) < layers]
    dense, t_svd, t_pairs, methods = dense_route(adapters, modules, pairs, args.k)
    t_dense = t_svd + t_pairs
    # SVDs scale with methods x modules, pair work with pairs x modules
    full = t_svd * (len(METHODS) / len(methods)) * (n_layers / layers) + t_pairs * (
        len(all_pairs) / len(pairs)
    ) * (n_layers / layers)
    exact = layers == n_layers and len(pairs) == len(all_pairs)
    print(
        f"dense route on {layers} layer(s) ({len(modules)} modules), {len(pairs)} pair(s) "
        f"({len(methods)} methods' SVDs): {t_dense:.1f} s (SVDs {t_svd:.1f} s, pair metrics {t_pairs:.1f} s)"
    )
    if exact:
        print(f"dense route, full report: {full:.1f} s (measured, not extrapolated)")
    else:
        print(
            f"dense route, full report: {full:.0f} s EXTRAPOLATED from {layers}/{n_layers} layers and "
            f"{len(pairs)}/{len(all_pairs)} pairs (SVD time x {len(METHODS)}/{len(methods)} methods x "
            f"{n_layers}/{layers} layers; pair time x {len(all_pairs)}/{len(pairs)} pairs x {n_layers}/{layers} layers)"
        )
    print(f"speed-up: {full / t_factored:.0f}x")

    factored = factored_values(report, modules, [p for p in pairs])
    worst: dict[str, float] = {}
    for key, want in dense.items():
        got = factored[key]
        rel = abs(got - want) / max(abs(want), 1e-12)
        worst[key[-1]] = max(worst.get(key[-1], 0.0), rel)
    print("largest relative difference, factored vs dense, per metric:")
    for metric, rel in worst.items():
        print(f"  {metric:<16} {rel:.2e}")
    print(f"largest relative difference across all metrics: {max(worst.values()):.2e}")
    print("global cosines (factored):")
    for p in report["pairs"]:
        print(f"  {p['a']:>5}-{p['b']:<5} {p['global_cosine']:.3f}  orth(b|a) {p['orth_frac']:.3f}")


if __name__ == "__main__":
    main()
