"""Statistics for the evaluation chapter: binomial intervals (Wilson, exact), bootstrap, exact McNemar, Holm.

Pure functions on plain sequences. McNemar is the exact (binomial) test on the
discordant pairs, the form the study reports; Holm-Bonferroni corrects the
15 pairwise tests of six methods without assuming independence.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps


class StatsInputError(ValueError):
    """Input a statistic cannot be computed on; the message names the argument."""


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (no continuity correction).

    Better than the normal interval near 0% and 100%, where small evaluation sets live.
    Returns (0.0, 1.0) when n == 0: nothing was measured.
    """
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise StatsInputError(f"wilson_interval: k and n must be integers, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise StatsInputError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < alpha < 1.0:
        raise StatsInputError(f"wilson_interval: alpha must be in (0, 1), got {alpha}")
    if n == 0:
        return 0.0, 1.0
    z = float(sps.norm.ppf(1.0 - alpha / 2.0))
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    # k = 0 and k = n give exactly 0 and 1 in exact arithmetic; do not let rounding move them.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def exact_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact binomial (Clopper-Pearson) interval for k successes in n trials.

    At least the stated coverage at every n and p (Wilson's can dip below it), so the one
    to quote for a 30-problem set such as AIME. Returns (0.0, 1.0) when n == 0.
    """
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise StatsInputError(f"exact_interval: k and n must be integers, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise StatsInputError(f"exact_interval: need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < alpha < 1.0:
        raise StatsInputError(f"exact_interval: alpha must be in (0, 1), got {alpha}")
    if n == 0:
        return 0.0, 1.0
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=1.0 - alpha, method="exact")
    return float(ci.low), float(ci.high)


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (scipy.stats.bootstrap).

    Percentile rather than BCa: BCa is undefined for constant data (all right or all
    wrong), which small evaluation sets hit. Constant or single values give (mean, mean).
    """
    data = np.asarray(values, dtype=float).ravel()
    if data.size == 0:
        raise StatsInputError("bootstrap_ci: `values` is empty")
    if not np.all(np.isfinite(data)):
        raise StatsInputError("bootstrap_ci: `values` contains NaN or infinity")
    if n_boot < 1:
        raise StatsInputError(f"bootstrap_ci: n_boot must be positive, got {n_boot}")
    if data.size == 1 or np.all(data == data[0]):
        mean = float(data.mean())
        return mean, mean
    result = sps.bootstrap(
        (data,),
        np.mean,
        n_resamples=n_boot,
        confidence_level=1.0 - alpha,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def as_bool_array(values: Sequence[Any], name: str) -> np.ndarray:
    """A 1-d boolean array from booleans or 0/1 integers; anything else is an error."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise StatsInputError(f"`{name}` must be a 1-d sequence of booleans, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    for value in arr.tolist():
        # Floats are refused on purpose: an accuracy passed by mistake must not pass as "true".
        if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
            continue
        raise StatsInputError(f"`{name}` must hold booleans (or 0/1 integers); found {value!r}")
    return arr.astype(bool)


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> tuple[int, int, float]:
    """Exact McNemar test of two models graded on the same problems.

    b = problems A gets right and B wrong, c = the reverse; the p-value is the exact
    two-sided binomial test of b against Binomial(b + c, 1/2), and 1.0 when b + c == 0.
    """
    a = as_bool_array(correct_a, "correct_a")
    b_arr = as_bool_array(correct_b, "correct_b")
    if a.shape != b_arr.shape:
        raise StatsInputError(
            f"mcnemar: correct_a and correct_b must have equal length (same problems), got {a.size} and {b_arr.size}"
        )
    b = int(np.sum(a & ~b_arr))
    c = int(np.sum(~a & b_arr))
    if b + c == 0:
        return b, c, 1.0
    return b, c, float(sps.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (monotone, capped at 1).

    Sorted ascending, p_(i) becomes max over j <= i of min(1, (m - j + 1) p_(j)).
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    if p.size == 0:
        return []
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise StatsInputError(f"holm: p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted_sorted = np.maximum.accumulate(scaled)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted.tolist()


def mcnemar_matrix(correct_by_model: Mapping[str, Sequence[bool]]) -> dict[str, Any]:
    """Exact McNemar for every pair of models, with Holm correction over all pairs.

    Returns JSON-ready nested dicts indexed [row][col]: `b` (row right, col wrong),
    `c` (row wrong, col right), `p` (raw), `p_holm` (adjusted over the m(m-1)/2 pairs),
    plus `models` (order) and `pairs`: one record {a, b, a_only, b_only, p, p_holm} per
    unordered pair. Diagonal: b = c = 0, p = 1.
    """
    models = list(correct_by_model)
    if len(models) < 2:
        raise StatsInputError(f"mcnemar_matrix: need at least two models, got {models}")
    arrays = {m: as_bool_array(v, f"correct_by_model[{m!r}]") for m, v in correct_by_model.items()}
    sizes = {m: int(a.size) for m, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise StatsInputError(
            f"mcnemar_matrix: every model must be graded on the same problems; sizes {sizes}"
        )

    pairs = []
    for row, col in itertools.combinations(models, 2):
        b, c, p = mcnemar(arrays[row], arrays[col])
        pairs.append({"a": row, "b": col, "a_only": b, "b_only": c, "p": p})
    for record, adjusted in zip(pairs, holm([r["p"] for r in pairs]), strict=True):
        record["p_holm"] = adjusted

    out: dict[str, Any] = {"models": models}
    for key in ("b", "c", "p", "p_holm"):
        diagonal = 1.0 if key.startswith("p") else 0
        out[key] = {r: {c: diagonal for c in models} for r in models}
    for r in pairs:
        row, col = r["a"], r["b"]
        out["b"][row][col], out["c"][row][col] = r["a_only"], r["b_only"]
        out["b"][col][row], out["c"][col][row] = r["b_only"], r["a_only"]  # swapping models swaps b and c
        for key in ("p", "p_holm"):
            out[key][row][col] = out[key][col][row] = r[key]
    out["pairs"] = pairs
    return out
