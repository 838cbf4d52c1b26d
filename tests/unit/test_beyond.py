"""Chapter 08's runs and measures: reused mixture levels, the contrastive protocol, caching, the
dose-response fit and its inversion, trajectories, rank correlations, accuracy reuse."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy import stats

from helpers import beyond, beyond_measures, pipeline
from helpers.beyond import BeyondError, Runs, contrastive_adapter, design_for, mixture_adapter, train_mixture
from helpers.beyond_analysis import (
    _largest_angle_median,
    dose_points,
    fit_line,
    inverse_interval,
    rank_correlations,
    settle_step,
    trajectory,
)
from helpers.cache import read_json
from helpers.deltas import LowRankDelta, load_deltas
from helpers.geometry import global_cosine
from helpers.profiles import load_profile
from helpers.replicates import replicate_profile
from helpers.results import save_results


@pytest.fixture(scope="module")
def smoke():
    """The smoke profile with its rollouts built (in the session's run folder: later tests reuse them)."""
    profile = load_profile("smoke")
    pipeline.rollouts_stage(profile)
    return profile


def _same(a, b) -> float:
    """Largest absolute difference between two adapters' dense updates."""
    da, db = load_deltas(a), load_deltas(b)
    assert set(da) == set(db)
    return max(float((da[m].dense() - db[m].dense()).abs().max()) for m in da)


def test_reused_levels_are_the_main_runs_exactly(smoke):
    # Share 0 is RFT's data row for row and the natural share SFT's: training them as mixtures
    # gives the main runs bit for bit, which is what lets the chapter reuse those runs.
    j = 1
    rp = replicate_profile(smoke, j)
    for share, run in ((0.0, "rft"), ("natural", "sft")):
        assert mixture_adapter(smoke, share, j) == pipeline.adapter_stage(rp, run)
        assert _same(train_mixture(smoke, share, j), pipeline.adapter_stage(rp, run)) == 0.0
    half = mixture_adapter(smoke, 0.5, j)
    assert half == train_mixture(smoke, 0.5, j) and _same(half, pipeline.adapter_stage(rp, "sft")) > 0
    info = read_json(half.parent / "mixture.json")
    assert abs(info["share"] - 0.5) < 0.1 and info["requested"] == 0.5


def test_contrastive_runs_use_dpo_learning_rate_and_are_reused(smoke, monkeypatch):
    first = contrastive_adapter(smoke, "simpo", 0)
    meta = read_json(first / "train_meta.json")
    assert meta["method"] == "simpo" and meta["lr"] == smoke.train.lr_for("dpo") != smoke.train.lr
    assert meta["steps"] == smoke.train.steps and meta["seed"] == smoke.train.seed
    other = contrastive_adapter(smoke, "simpo", 1)  # replicate 1: its own seeds, its own run
    assert other != first and read_json(other / "train_meta.json")["seed"] != meta["seed"]

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr("helpers.train.train_method", no_training)
    assert contrastive_adapter(smoke, "simpo", 0) == first
    assert mixture_adapter(smoke, 0.5, 1) == train_mixture(smoke, 0.5, 1)
    with pytest.raises(BeyondError, match="not a contrastive loss"):
        contrastive_adapter(smoke, "dpo", 0)


def test_dose_points_read_the_realised_share_and_cosine_to_rft(smoke):
    rp = replicate_profile(smoke, 1)
    main = {"rft": pipeline.adapter_stage(rp, "rft"), "sft": pipeline.adapter_stage(rp, "sft")}
    shares = (0.0, 0.5, "natural")
    runs = Runs(
        1,
        main,
        {beyond.share_key(s): mixture_adapter(smoke, s, 1) for s in shares},
        {beyond.share_key(s): beyond.mixture_info(smoke, s, 1) for s in shares},
        {},
    )
    points = {p["level"]: p for p in dose_points([runs])}
    assert points["0"]["cosine_to_rft"] == pytest.approx(1.0, abs=1e-12) and points["0"]["share"] == 0
    sft_rft = global_cosine(load_deltas(main["sft"]), load_deltas(main["rft"]))
    assert points["natural"]["cosine_to_rft"] == pytest.approx(sft_rft, abs=1e-12)
    assert 0 < points["natural"]["share"] < 1 and points["natural"]["run"] == "sft"


def test_design_overrides_and_errors(smoke):
    d = design_for(smoke, "0, 0.25,natural", "ipo,kto", 5)
    assert d.shares == (0.0, 0.25, "natural") and d.contrastive == ("ipo", "kto")
    assert d.contrastive_replicates == smoke.train.replicates  # capped at what the profile makes
    for bad, why in (("0,1.5", "outside"), ("0,half", "neither a number"), ("0.5", "two levels")):
        with pytest.raises(BeyondError, match=why):
            design_for(smoke, bad)
    with pytest.raises(BeyondError, match="CONTRASTIVE"):
        design_for(smoke, "", "dpo")


# --- the dose-response line and its inversion --------------------------------------


def test_fit_line_matches_numpy_and_the_inverse_interval_is_where_the_band_meets_y0():
    rng = np.random.default_rng(0)
    x = np.repeat([0.0, 0.25, 0.5, 0.75], 3)
    y = 1.0 - 0.4 * x + rng.normal(0, 0.02, x.size)
    fit = fit_line(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(intercept)
    y0 = 0.85
    inv = inverse_interval(x, y, y0)
    assert inv["share"] == pytest.approx((y0 - intercept) / slope)
    lo, hi = inv["ci"]
    assert lo < inv["share"] < hi
    # at each end the 95% confidence band of the mean line passes exactly through y0
    n, resid = x.size, y - (intercept + slope * x)
    s = math.sqrt(resid @ resid / (n - 2))
    t = stats.t.ppf(0.975, n - 2)
    for end in (lo, hi):
        half = t * s * math.sqrt(1 / n + (end - x.mean()) ** 2 / ((x - x.mean()) @ (x - x.mean())))
        assert abs(intercept + slope * end - y0) == pytest.approx(half, rel=1e-9)


def test_a_flat_line_has_no_bounded_inverse_interval():
    x = np.repeat([0.0, 0.5, 1.0], 3)
    y = np.array([0.9, 1.0, 0.8, 0.95, 0.85, 0.9, 0.8, 1.0, 0.9])
    assert inverse_interval(x, y, 0.977)["ci"] is None
    with pytest.raises(ValueError, match="two distinct"):
        fit_line([0.5, 0.5], [1.0, 0.9])


# --- trajectories --------------------------------------------------------------------


def test_settle_step_is_where_the_criterion_holds_from_then_on():
    steps = [25, 50, 75, 100]
    ok = lambda c: c >= 0.9  # noqa: E731
    assert settle_step(steps, [0.95, 0.7, 0.92, 1.0], ok) == 75  # 25 passes, but 50 falls back below
    assert settle_step(steps, [0.91, 0.93, 0.95, 1.0], ok) == 25
    assert settle_step(steps, [0.5, 0.6, 0.7, 0.8], ok) is None


def _delta(seed: int, shape=(12, 10), r: int = 4) -> LowRankDelta:
    g = torch.Generator().manual_seed(seed)
    rand = lambda *size: torch.randn(*size, generator=g, dtype=torch.float64)  # noqa: E731
    return LowRankDelta(rand(shape[0], r), rand(r, shape[1]), 0.5)


def test_rotation_is_the_largest_angle_between_top_k_output_subspaces():
    a = {f"m{i}": _delta(i) for i in range(3)}
    b = {f"m{i}": _delta(10 + i) for i in range(3)}
    k = 2
    expected = []
    for m in a:
        ua = torch.linalg.svd(a[m].dense().double())[0][:, :k].numpy()
        ub = torch.linalg.svd(b[m].dense().double())[0][:, :k].numpy()
        expected.append(np.degrees(scipy.linalg.subspace_angles(ua, ub).max()))
    assert _largest_angle_median(a, b, k) == pytest.approx(float(np.median(expected)), abs=1e-6)
    assert _largest_angle_median(a, a, k) == pytest.approx(0.0, abs=1e-5)


def test_trajectory_of_real_runs(smoke):
    runs = {n: pipeline.adapter_stage(smoke, n) for n in ("sft", "dpo")}
    t = trajectory(smoke, runs, k=1)
    assert t["steps"] == list(smoke.train.kept_steps()) and t["result_step"] == smoke.train.result_step
    at = t["steps"].index(t["result_step"])
    assert all(v[at] == pytest.approx(1.0) for v in t["cosine_to_final"].values())
    assert len(t["rotation"]["sft"]) == len(t["steps"]) - 1
    step0 = {n: load_deltas(pipeline.adapter_at(smoke, n, t["steps"][0])) for n in runs}
    assert t["pair_cosine"]["sft-dpo"][0] == pytest.approx(global_cosine(step0["sft"], step0["dpo"]))


# --- function space ------------------------------------------------------------------


def test_rank_correlations_are_spearman_within_each_replicate():
    rows = []
    kl = [0.1, 0.2, 0.3, 5.0, 0.4]
    change = [0.01, 0.02, 0.05, 0.03, 0.04]
    for j in (0, 1):
        for i, (x, c) in enumerate(zip(kl, change, strict=True)):
            rows.append(
                {"replicate": j, "method": f"m{i}", "forward_kl": x, "norm": 1.0 + i * (j + 1),
                 "cosine_to_sft": 0.5, "accuracy_change": c if j == 0 else 0.0}
            )  # fmt: skip
    rho = rank_correlations(rows)
    assert rho["0"]["forward_kl"]["rho"] == pytest.approx(stats.spearmanr(kl, change).statistic)
    assert rho["0"]["forward_kl"]["rho"] != pytest.approx(stats.pearsonr(kl, change).statistic)
    assert math.isnan(rho["0"]["cosine_to_sft"]["rho"])  # the measure does not vary
    assert math.isnan(rho["1"]["forward_kl"]["rho"])  # the accuracy does not vary


def test_accuracies_reuse_chapter_06_only_for_the_same_adapters(tmp_path, monkeypatch):
    monkeypatch.setenv("WSG_RUNS", str(tmp_path))  # results of its own, never the session's
    smoke = load_profile("smoke")
    sft, rft = tmp_path / "adapter-sft" / "adapter", tmp_path / "adapter-rft" / "adapter"
    other = tmp_path / "adapter-sft-1" / "adapter"  # replicate 1's own sft
    save_results(
        smoke.name,
        "02_training",
        {
            "adapters": {"sft": str(sft), "rft": "/elsewhere/rft"},
            "per_replicate": [{}, {"adapters": {"sft": str(other), "rft": str(rft)}}],
        },
    )
    save_results(
        smoke.name,
        "06_evaluation",
        {
            "evaluation": {"accuracy": {"base": 0.25, "sft": 0.5, "rft": 0.75}},
            "per_replicate": [{}, {"evaluation": {"accuracy": {"base": 0.3, "sft": 0.625, "rft": 0.875}}}],
        },
    )
    asked = []

    def fake(profile, runs):
        asked.append(dict(runs))
        return {n: 0.125 for n in runs}

    monkeypatch.setattr(beyond_measures, "_evaluate", fake)
    runs = [Runs(0, {"sft": sft, "rft": rft}, {}, {}, {}), Runs(1, {"sft": sft, "rft": rft}, {}, {}, {})]
    acc = beyond_measures.accuracies(smoke, runs)
    assert acc[0] == {"sft": 0.5, "rft": 0.125, "base": 0.25}  # rft's recorded adapter is another one
    # replicate 1 reads its own record: rft is the same adapter there, sft is not; one base for all
    assert acc[1] == {"sft": 0.125, "rft": 0.875, "base": 0.25}
    assert asked == [{"rft": rft}, {"sft": sft}]
    save_results(smoke.name, "06_evaluation", {"evaluation": {"accuracy": {"base": 0.25}}})  # older record
    assert beyond_measures.accuracies(smoke, runs[1:])[1] == {"sft": 0.125, "rft": 0.125, "base": 0.25}
