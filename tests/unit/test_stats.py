"""Tests of helpers.stats against scipy and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from helpers.stats import (
    StatsInputError,
    bootstrap_ci,
    exact_interval,
    holm,
    mcnemar,
    mcnemar_matrix,
    wilson_interval,
)


@pytest.mark.parametrize(
    "k,n", [(0, 1), (0, 10), (3, 10), (5, 10), (10, 10), (1, 30), (1150, 1319), (7, 256)]
)
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.01])
def test_wilson_matches_scipy(k, n, alpha):
    ref = sps.binomtest(k, n).proportion_ci(method="wilson", confidence_level=1 - alpha)
    lo, hi = wilson_interval(k, n, alpha)
    assert lo == pytest.approx(ref.low, abs=1e-12)
    assert hi == pytest.approx(ref.high, abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_by_hand():
    # k = 5, n = 10, z = 1.959964: centre 0.5, half = z*sqrt(0.025 + z^2/400) / (1 + z^2/10).
    z = 1.959963984540054
    half = z * math.sqrt(0.25 / 10 + z * z / 400) / (1 + z * z / 10)
    assert wilson_interval(5, 10) == pytest.approx((0.5 - half, 0.5 + half))
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("k,n", [(-1, 5), (6, 5), (1.5, 5), (True, 5)])
def test_wilson_bad_input(k, n):
    with pytest.raises(StatsInputError, match="wilson_interval"):
        wilson_interval(k, n)


def test_bootstrap_ci_properties():
    rng = np.random.default_rng(0)
    values = rng.random(400) < 0.3
    lo, hi = bootstrap_ci(values, n_boot=2000, seed=1)
    assert lo < values.mean() < hi
    assert bootstrap_ci(values, n_boot=2000, seed=1) == (lo, hi)  # seeded
    # Normal approximation of the mean's interval as an independent reference.
    se = values.std() / math.sqrt(values.size)
    assert lo == pytest.approx(values.mean() - 1.96 * se, abs=0.012)
    assert hi == pytest.approx(values.mean() + 1.96 * se, abs=0.012)
    wide = bootstrap_ci(values[:50], n_boot=2000, seed=1)
    assert wide[1] - wide[0] > hi - lo  # fewer problems, wider interval


def test_bootstrap_ci_constant_and_errors():
    assert bootstrap_ci([1.0, 1.0, 1.0], n_boot=100, seed=0) == (1.0, 1.0)
    assert bootstrap_ci([0.25], n_boot=100, seed=0) == (0.25, 0.25)
    with pytest.raises(StatsInputError, match="empty"):
        bootstrap_ci([], n_boot=10, seed=0)
    with pytest.raises(StatsInputError, match="NaN"):
        bootstrap_ci([1.0, float("nan")], n_boot=10, seed=0)


def test_mcnemar_counts_and_exact_p_by_hand():
    a = [True, True, True, False, False, True]
    b = [False, False, True, True, False, True]
    # a-only: rows 0, 1; b-only: row 3; discordant n = 3, P(X >= 2) = 4/8, two-sided -> 1.0.
    assert mcnemar(a, b) == (2, 1, pytest.approx(1.0))
    # b = 5, c = 0: two-sided 2 * (1/2)^5 = 0.0625.
    assert mcnemar([True] * 5 + [False], [False] * 5 + [False]) == (5, 0, pytest.approx(0.0625))
    # b = 6, c = 1: 2 * P(X >= 6 | n=7) = 2 * 8/128 = 0.125; order swaps b and c, not p.
    x = [True] * 6 + [False] + [True] * 3
    y = [False] * 6 + [True] + [True] * 3
    assert mcnemar(x, y) == (6, 1, pytest.approx(0.125))
    assert mcnemar(y, x) == (1, 6, pytest.approx(0.125))


def test_mcnemar_no_discordant_pairs_and_numpy_input():
    assert mcnemar([True, False], [True, False]) == (0, 0, 1.0)
    assert mcnemar(np.array([1, 0, 1]), np.array([0, 0, 1])) == (1, 0, 1.0)
    assert mcnemar([], []) == (0, 0, 1.0)


def test_mcnemar_bad_input():
    with pytest.raises(StatsInputError, match="equal length"):
        mcnemar([True, False], [True])
    with pytest.raises(StatsInputError, match="correct_b.*found 2"):
        mcnemar([True, False], [1, 2])
    with pytest.raises(StatsInputError, match="correct_a.*0.5"):
        mcnemar([0.5, 1.0], [True, False])
    with pytest.raises(StatsInputError, match="correct_a"):
        mcnemar(["yes", "no"], [True, False])


def test_holm_by_hand():
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> running max .02 .03 .06 .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone
    assert holm([0.2]) == pytest.approx([0.2])
    assert holm([]) == []
    with pytest.raises(StatsInputError, match="holm"):
        holm([0.1, 1.5])


def test_mcnemar_matrix():
    rng = np.random.default_rng(3)
    truth = {name: rng.random(60) < p for name, p in [("sft", 0.5), ("rft", 0.55), ("dpo", 0.9)]}
    out = mcnemar_matrix(truth)
    assert out["models"] == ["sft", "rft", "dpo"]
    assert len(out["pairs"]) == 3
    for a in truth:
        assert out["p"][a][a] == 1.0 and out["b"][a][a] == 0
        for b in truth:
            if a != b:
                b_ab, c_ab, p_ab = mcnemar(truth[a], truth[b])
                assert (out["b"][a][b], out["c"][a][b]) == (b_ab, c_ab)
                assert (out["b"][b][a], out["c"][b][a]) == (c_ab, b_ab)
                assert out["p"][a][b] == out["p"][b][a] == pytest.approx(p_ab)
    raw = [r["p"] for r in out["pairs"]]
    assert [r["p_holm"] for r in out["pairs"]] == pytest.approx(holm(raw))
    assert out["p"]["sft"]["dpo"] < 1e-3  # 0.5 vs 0.9 on 60 problems is detectable
    with pytest.raises(StatsInputError, match="same problems"):
        mcnemar_matrix({"a": [True], "b": [True, False]})
    with pytest.raises(StatsInputError, match="two models"):
        mcnemar_matrix({"a": [True]})


@pytest.mark.parametrize("k,n", [(0, 30), (1, 30), (15, 30), (29, 30), (30, 30), (7, 256)])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_exact_interval_is_clopper_pearson(k, n, alpha):
    # Clopper-Pearson from beta quantiles, independent of binomtest's root finding.
    low = 0.0 if k == 0 else sps.beta.ppf(alpha / 2, k, n - k + 1)
    high = 1.0 if k == n else sps.beta.ppf(1 - alpha / 2, k + 1, n - k)
    assert exact_interval(k, n, alpha) == pytest.approx((low, high), rel=1e-6, abs=1e-12)


def test_exact_interval_by_hand_and_bad_input():
    # No success in 30: the upper end solves (1 - p)^30 = 0.025.
    assert exact_interval(0, 30) == pytest.approx((0.0, 1 - 0.025 ** (1 / 30)), rel=1e-6)
    assert exact_interval(0, 0) == (0.0, 1.0)
    low, high = exact_interval(3, 30)
    w_low, w_high = wilson_interval(3, 30)
    assert low < w_low and high > w_high  # exact is the wider, conservative one here
    for k, n in [(-1, 5), (6, 5), (1.5, 5), (True, 5)]:
        with pytest.raises(StatsInputError, match="exact_interval"):
            exact_interval(k, n)
