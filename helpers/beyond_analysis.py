"""Chapter 08's measures, within each replicate: dose-response, trajectories, the contrastive family, function space.

Inputs are the adapters `helpers.beyond.collect_runs` returns; outputs are plain JSON-ready
dicts (replicates keyed by their index as a string), which the findings and figures read.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .beyond import Runs, step_adapters
from .deltas import load_deltas
from .geometry import global_cosine, global_norm, principal_angles
from .profiles import Profile

# A direction "has settled" from the first kept step after which its cosine to the final
# (result_step) update stays at or above 0.9, i.e. within about 26 degrees: the cosine the
# study's cluster members keep to one another is higher, a rerun's far lower.
SETTLE_COSINE = 0.9
# A pair's cosine "has settled" from the first kept step after which it stays within 0.1 of
# its value at result_step: five times the 0.02 the study's near-identical cosines spread over.
PAIR_SETTLE_TOL = 0.1
ALPHA = 0.05  # two-sided level of every interval of the chapter


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return {"mean": statistics.fmean(finite), "sd": sd, "n": len(finite)}


# --- 1. dose-response --------------------------------------------------------------


def dose_points(by_replicate: Sequence[Runs]) -> list[dict[str, Any]]:
    """Cosine of each mixture's update to RFT's (same replicate), with the realised wrong-token share."""
    rows = []
    for runs in by_replicate:
        rft = load_deltas(runs.main["rft"])
        for key, path in runs.mixtures.items():
            info = runs.mixture_info[key]
            rows.append(
                {
                    "replicate": runs.replicate,
                    "level": key,
                    "run": info["run"],
                    "share": info["share"],
                    "cosine_to_rft": global_cosine(load_deltas(path), rft),
                }
            )
    return rows


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least-squares line y = intercept + slope x, with the slope's standard error and 1 - alpha interval."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError(f"fit_line needs at least two distinct x values, got {list(xs)}")
    fit = stats.linregress(x, y)
    dof = x.size - 2
    t = stats.t.ppf(1 - ALPHA / 2, dof) if dof > 0 else float("nan")
    se = float(fit.stderr) if dof > 0 else float("nan")
    return {
        "slope": float(fit.slope),
        "intercept": float(fit.intercept),
        "slope_se": se,
        "slope_ci": [float(fit.slope - t * se), float(fit.slope + t * se)],
        "r2": float(fit.rvalue**2),
        "n": int(x.size),
    }


def inverse_interval(xs: Sequence[float], ys: Sequence[float], y0: float) -> dict[str, Any]:
    """The x where the fitted line reaches y0, and its 1 - alpha interval (Fieller's inverse prediction).

    The interval is every x at which the line's confidence band contains y0; it is None
    (unbounded) when the slope is not significantly different from zero.
    """
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    fit = fit_line(x, y)
    a, b, n = fit["intercept"], fit["slope"], x.size
    point = (y0 - a) / b if b != 0 else float("nan")
    out = {"share": point, "ci": None, "within_measured": bool(x.min() <= point <= x.max())}
    if n < 3:
        return out
    s2 = float(np.sum((y - a - b * x) ** 2) / (n - 2))
    t2 = stats.t.ppf(1 - ALPHA / 2, n - 2) ** 2
    xbar, sxx = float(x.mean()), float(np.sum((x - x.mean()) ** 2))
    # (a + b x - y0)^2 = t^2 s^2 (1/n + (x - xbar)^2 / sxx), a quadratic in x
    qa = b * b - t2 * s2 / sxx
    qb = 2 * b * (a - y0) + 2 * t2 * s2 * xbar / sxx
    qc = (a - y0) ** 2 - t2 * s2 * (1 / n + xbar**2 / sxx)
    disc = qb * qb - 4 * qa * qc
    if qa > 0 and disc >= 0:
        roots = sorted(((-qb - math.sqrt(disc)) / (2 * qa), (-qb + math.sqrt(disc)) / (2 * qa)))
        out["ci"] = roots
    return out


def dose_response(points: Sequence[Mapping[str, Any]], study_cosine: float) -> dict[str, Any]:
    """Pooled and per-replicate lines of cosine to RFT against wrong share, and the share the study's cosine implies."""
    xs = [p["share"] for p in points]
    ys = [p["cosine_to_rft"] for p in points]
    per = {}
    for j in sorted({p["replicate"] for p in points}):
        mine = [p for p in points if p["replicate"] == j]
        line = fit_line([p["share"] for p in mine], [p["cosine_to_rft"] for p in mine])
        implied = (study_cosine - line["intercept"]) / line["slope"] if line["slope"] else float("nan")
        per[str(j)] = {**line, "implied_share": implied}
    levels = {}
    for level in dict.fromkeys(p["level"] for p in points):
        mine = [p for p in points if p["level"] == level]
        levels[level] = {
            "share": _mean_sd([p["share"] for p in mine]),
            "cosine_to_rft": _mean_sd([p["cosine_to_rft"] for p in mine]),
            "run": mine[0]["run"],
        }
    return {
        "points": list(points),
        "levels": levels,
        "fit": fit_line(xs, ys),
        "per_replicate": per,
        "slope_over_replicates": _mean_sd([r["slope"] for r in per.values()]),
        "study_cosine": study_cosine,
        "implied": inverse_interval(xs, ys, study_cosine),
        "measured_shares": [min(xs), max(xs)],
    }


# --- 2. trajectories ---------------------------------------------------------------


def settle_step(steps: Sequence[int], values: Sequence[float], ok) -> int | None:
    """The first step from which `ok(value)` holds at every later kept step (None: never)."""
    for i, step in enumerate(steps):
        if all(ok(v) for v in values[i:]):
            return int(step)
    return None


def _largest_angle_median(a: Mapping, b: Mapping, k: int) -> float:
    angles = [principal_angles(a[m], b[m], k) for m in a]
    return (
        float(np.median([x[-1] for x in angles if x.size])) if any(x.size for x in angles) else float("nan")
    )


def trajectory(profile: Profile, runs: Mapping[str, Path], k: int) -> dict[str, Any]:
    """One replicate: pair cosines at every kept step, each run's cosine to its final update, and the
    rotation of its top-k output subspace between consecutive kept steps (median over modules of
    the largest principal angle, degrees)."""
    steps = list(profile.train.kept_steps())
    final = profile.train.result_step
    deltas = {n: {s: load_deltas(p) for s, p in step_adapters(profile, d).items()} for n, d in runs.items()}
    names = list(runs)
    pair_cos = {
        f"{a}-{b}": [global_cosine(deltas[a][s], deltas[b][s]) for s in steps]
        for a, b in itertools.combinations(names, 2)
    }
    to_final = {n: [global_cosine(deltas[n][s], deltas[n][final]) for s in steps] for n in names}
    rotation = {
        n: [_largest_angle_median(deltas[n][s], deltas[n][t], k) for s, t in itertools.pairwise(steps)]
        for n in names
    }
    at = steps.index(final)
    return {
        "steps": steps,
        "result_step": final,
        "k": k,
        "pair_cosine": pair_cos,
        "cosine_to_final": to_final,
        "rotation": rotation,
        "settle_step": {n: settle_step(steps, v, lambda c: c >= SETTLE_COSINE) for n, v in to_final.items()},
        "pair_settle_step": {
            p: settle_step(steps, v, lambda c, f=v[at]: abs(c - f) <= PAIR_SETTLE_TOL)
            for p, v in pair_cos.items()
        },
    }


# --- 3. the contrastive family -----------------------------------------------------


def cosine_map(by_replicate: Sequence[Runs]) -> dict[str, dict[str, float]]:
    """Global cosine of every pair of methods (main and contrastive) within each replicate."""
    out = {}
    for runs in by_replicate:
        deltas = {n: load_deltas(p) for n, p in runs.methods().items()}
        out[str(runs.replicate)] = {
            f"{a}-{b}": global_cosine(deltas[a], deltas[b]) for a, b in itertools.combinations(deltas, 2)
        }
    return out


def pair_value(table: Mapping[str, float], a: str, b: str) -> float | None:
    """A symmetric pair's value in either order."""
    return table.get(f"{a}-{b}", table.get(f"{b}-{a}"))


# --- 4. function space -------------------------------------------------------------

MEASURES = {"forward_kl": "forward KL(base || method)", "norm": "||dW||_F", "cosine_to_sft": "cosine to SFT"}


def function_space_rows(
    by_replicate: Sequence[Runs],
    kls: Mapping[int, Mapping[str, Mapping[str, float]]],
    accuracy: Mapping[int, Mapping[str, float]],
) -> list[dict[str, Any]]:
    """One row per method and replicate: forward KL, update norm, cosine to SFT, accuracy and its change from the base."""
    rows = []
    for runs in by_replicate:
        j = runs.replicate
        deltas = {n: load_deltas(p) for n, p in runs.methods().items()}
        for name, d in deltas.items():
            acc = accuracy[j][name]
            rows.append(
                {
                    "replicate": j,
                    "method": name,
                    "forward_kl": kls[j][name]["per_completion"],
                    "forward_kl_per_token": kls[j][name]["per_token"],
                    "norm": global_norm(d),
                    "cosine_to_sft": global_cosine(d, deltas["sft"]),
                    "accuracy": acc,
                    "accuracy_change": acc - accuracy[j]["base"],
                }
            )
    return rows


def rank_correlations(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Spearman rho (and its p-value) over methods, within each replicate, of each measure with the
    change in accuracy; nan where either side does not vary."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for j in sorted({r["replicate"] for r in rows}):
        mine = [r for r in rows if r["replicate"] == j]
        change = [r["accuracy_change"] for r in mine]
        out[str(j)] = {}
        for measure in MEASURES:
            xs = [r[measure] for r in mine]
            if len(set(change)) < 2 or len(set(xs)) < 2:
                out[str(j)][measure] = {"rho": float("nan"), "p": float("nan"), "n": len(mine)}
                continue
            result = stats.spearmanr(xs, change)
            out[str(j)][measure] = {"rho": float(result.statistic), "p": float(result.pvalue), "n": len(mine)}
    return out


def spread(values: Sequence[float | None]) -> dict[str, float]:
    """Mean, sd and count of the finite values (over replicates)."""
    return _mean_sd(values)


def trajectories(profile: Profile, by_replicate: Sequence[Runs]) -> dict[str, dict[str, Any]]:
    """`trajectory` of the main methods in every replicate, with the top-k of the chapter-03 reading."""
    from .readings import top_k_for
    from .replicates import replicate_profile

    k = top_k_for(profile.lora.r)
    return {
        str(r.replicate): trajectory(replicate_profile(profile, r.replicate), r.main, k) for r in by_replicate
    }
