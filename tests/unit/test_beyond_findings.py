"""Chapter 08's verdicts: each criterion against its named threshold in every replicate, and the rule
that turns replicate checks into holds / does not hold / inconclusive."""

from __future__ import annotations

from helpers import beyond_findings as bf
from helpers.beyond_findings import FAILS, HOLDS, INCONCLUSIVE, verdict


def test_verdict_needs_every_replicate_measured_and_agreeing():
    assert verdict({"0": True, "1": True}) == (HOLDS, "holds in all 2 replicates")
    assert verdict({"0": False, "1": False, "2": False})[0] == FAILS
    assert verdict({"0": True, "1": False}) == (INCONCLUSIVE, "holds in 1 of 2 replicates")
    assert verdict({"0": True, "1": None})[0] == INCONCLUSIVE  # one replicate could not measure it
    assert verdict({"0": True})[0] == INCONCLUSIVE  # one replicate is one draw of the seeds
    assert verdict({})[0] == INCONCLUSIVE


def _dose(slopes: list[float]) -> dict:
    per = {
        str(j): {"slope": s, "intercept": 1.0, "implied_share": (0.977 - 1.0) / s}
        for j, s in enumerate(slopes)
    }
    return {
        "per_replicate": per,
        "implied": {"share": 0.1, "ci": [-0.1, 0.3], "within_measured": True},
        "study_cosine": 0.977,
    }


def _by_id(items: list[dict]) -> dict[str, dict]:
    return {f["id"]: f for f in items}


def test_dose_findings_follow_the_slope_threshold():
    steep, flat = bf.DOSE_SLOPE_MAX - 0.01, bf.DOSE_SLOPE_MAX + 0.01
    assert _by_id(bf.dose_findings(_dose([steep, steep])))["dose_slope"]["verdict"] == HOLDS
    assert _by_id(bf.dose_findings(_dose([flat, flat])))["dose_slope"]["verdict"] == FAILS
    assert _by_id(bf.dose_findings(_dose([steep, flat])))["dose_slope"]["verdict"] == INCONCLUSIVE
    # implied share: 0.023 / 0.1 = 0.23 < 0.5 holds; a rising line implies nothing
    assert _by_id(bf.dose_findings(_dose([-0.1, -0.1])))["dose_implied_share"]["verdict"] == HOLDS
    assert _by_id(bf.dose_findings(_dose([-0.01, -0.01])))["dose_implied_share"]["verdict"] == FAILS  # 2.3
    assert _by_id(bf.dose_findings(_dose([-0.1, 0.1])))["dose_implied_share"]["verdict"] == INCONCLUSIVE


def _trajectory(settle: dict, first_gap: float) -> dict:
    steps = [25, 50, 75, 100]
    return {
        "steps": steps,
        "result_step": 100,
        "settle_step": settle,
        "pair_cosine": {"sft-rft": [0.9 + first_gap, 0.9, 0.9, 0.9], "dpo-rft": [0.0, 0.5, 0.5, 0.5]},
    }


def test_trajectory_findings():
    early = {"0": _trajectory({"sft": 25, "rft": 50}, 0.05), "1": _trajectory({"sft": 50, "rft": 50}, 0.0)}
    found = _by_id(bf.trajectory_findings(early))
    assert found["directions_settle"]["verdict"] == HOLDS and found["separate_early"]["verdict"] == HOLDS
    late = {"0": _trajectory({"sft": 75, "rft": 50}, 0.2), "1": _trajectory({"sft": 75, "rft": 75}, 0.2)}
    found = _by_id(bf.trajectory_findings(late))
    assert found["directions_settle"]["verdict"] == FAILS  # 75 is past the middle of 100 steps
    never = {"0": _trajectory({"sft": 25, "rft": 50}, 0.2), "1": _trajectory({"sft": None, "rft": 50}, 0.2)}
    # a direction that never settles is not measured; the pair not involving SFT is not judged
    assert _by_id(bf.trajectory_findings(never))["directions_settle"]["verdict"] == INCONCLUSIVE
    assert found["separate_early"]["verdict"] == FAILS


def _contrastive(kto_to_dpo: float, barrier: float) -> dict:
    cos = {"simpo-dpo": 0.9, "sft-simpo": 0.0, "dpo-kto": kto_to_dpo, "kto-sft": 0.5}
    curve = {"barrier": {"chord": {"answer_ce": 0.0}, "endpoint_mean": {"answer_ce": barrier}}}
    paths = {p: curve for p in ("simpo-dpo", "kto-dpo", "simpo-sft", "kto-sft", "dpo-sft")}
    return {
        "methods": ["simpo", "kto"],
        "replicates": ["0", "1"],
        "cosine": {"0": cos, "1": cos},
        "paths": {"0": paths, "1": paths},
    }


def test_contrastive_findings():
    found = _by_id(bf.contrastive_findings(_contrastive(0.1, 0.0)))
    assert found["simpo_with_dpo"]["verdict"] == HOLDS and found["kto_with_dpo"]["verdict"] == FAILS
    assert found["contrastive_in_dpo_basin"]["verdict"] == HOLDS
    found = _by_id(
        bf.contrastive_findings(_contrastive(0.5 + bf.MIN_COSINE_GAP / 2, bf.BARRIER_MARGIN + 0.01))
    )
    assert found["kto_with_dpo"]["verdict"] == FAILS  # closer to DPO, but not by MIN_COSINE_GAP
    assert found["contrastive_in_dpo_basin"]["verdict"] == FAILS  # the endpoint-mean kind counts too


def _rho(kl: float, p: float, norm: float, cos: float) -> dict:
    return {
        "forward_kl": {"rho": kl, "p": p},
        "norm": {"rho": norm, "p": 0.5},
        "cosine_to_sft": {"rho": cos, "p": 0.5},
    }


def test_function_space_findings():
    found = _by_id(
        bf.function_space_findings({"0": _rho(-0.8, 0.01, 0.3, 0.5), "1": _rho(-0.7, 0.02, 0.6, -0.2)})
    )
    assert found["kl_tracks_accuracy"]["verdict"] == HOLDS  # the sign does not matter, the test does
    assert found["kl_beats_weight_space"]["verdict"] == HOLDS
    found = _by_id(
        bf.function_space_findings({"0": _rho(0.8, 0.01, 0.9, 0.1), "1": _rho(0.2, 0.6, 0.1, 0.1)})
    )
    assert found["kl_tracks_accuracy"]["verdict"] == INCONCLUSIVE
    assert found["kl_beats_weight_space"]["verdict"] == INCONCLUSIVE
    nan = float("nan")
    found = _by_id(bf.function_space_findings({"0": _rho(nan, nan, nan, nan), "1": _rho(nan, nan, nan, nan)}))
    assert found["kl_tracks_accuracy"]["reason"].startswith("not measurable")


def test_summary_states_the_numbers():
    record = {
        "profile": "smoke",
        "replicates": [0, 1],
        "dose": {
            **_dose([-0.2, -0.3]),
            "levels": {
                "0": {"share": {"mean": 0.0}, "cosine_to_rft": {"mean": 1.0, "sd": 0.0}, "run": "rft"}
            },
            "fit": {"slope": -0.25, "slope_ci": [-0.4, -0.1], "r2": 0.9},
        },
        "trajectories": {
            "0": {**_trajectory({"sft": 25}, 0.0), "k": 2, "rotation": {"sft": [12.5, 3.0, 1.0]}}
        },
        "contrastive": _contrastive(0.1, 0.0),
        "function_space": {"rho": {"0": _rho(0.8, 0.01, 0.3, 0.5), "1": _rho(0.6, 0.04, 0.3, 0.5)}},
    }
    items = bf.findings(record)
    text = bf.summary_markdown(record, items)
    assert "slope -0.250 per unit share" in text and "share 0.100" in text
    assert "SimPO: cosine 0.900 ± 0.000 to DPO" in text and "forward KL(base || method) +0.70 ± 0.14" in text
    assert f"{sum(f['verdict'] == HOLDS for f in items)} hold" in text
    assert all(f["sentence"] in text for f in items)
