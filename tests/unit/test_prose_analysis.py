"""helpers.prose_analysis: the summaries of chapters 3, 4 and 7 say what their results say."""

import pytest

from helpers import prose_analysis as pa


def _s(values):
    """A summary over replicates as helpers.spread writes it (None: not measured there)."""
    got = [v for v in values if v is not None]
    return {
        "mean": sum(got) / len(got),
        "min": min(got),
        "max": max(got),
        "n": len(got),
        "values": list(values),
    }


def test_in_every_replicate_sorts_by_agreement():
    counts = {"a": (3, 3), "b": (0, 3), "c": (1, 3), "d": (1, 1), "e": (0, 0)}
    assert pa.in_every_replicate(counts) == {"every": ["a", "d"], "none": ["b"], "some": ["c"]}


def _geometry_out():
    floor = [0.93, 0.93, 0.93]
    cosine = {
        "sft-rft": _s([0.95, 0.90, 0.97]),  # above the floor in two replicates, below in one
        "dpo-sft": _s([0.10, 0.20, 0.00]),  # below it in every replicate, stored in the other order
        "sft-rift": _s([0.99, 0.98, 0.99]),
        "sft-sft_order": _s(floor),
        "sft-online_grpo": _s([0.05, None, None]),  # a control of the first replicate only
        "rft-dpo": _s([0.5, 0.5, 0.5]),  # not a pair with the reference
    }
    smallest = {p: _s([5.0, 6.0, 7.0]) for p in cosine}
    largest = {p: _s([80.0, 81.0, 82.0]) for p in cosine}
    fraction = {
        "orthogonal_fraction": {"grpo-sft": _s([0.6] * 3), "sft-grpo": _s([0.1] * 3)},
        "orthogonal_fraction_top_k": {"grpo-sft": _s([0.8] * 3), "sft-grpo": _s([0.2] * 3)},
        "orthogonal_fraction_direction": {"grpo-sft": _s([0.9] * 3), "sft-grpo": _s([0.3] * 3)},
    }
    methods = ["sft", "rft", "dpo", "rift", "sft_order", "online_grpo", "grpo"]
    per_method = {m: {"effective_rank_median": _s([4.0 + i] * 3)} for i, m in enumerate(methods)}
    geometry = {
        "global_cosine": cosine,
        "median_smallest_angle": smallest,
        "median_largest_angle": largest,
        **fraction,
    }
    chance = {"measures": {"global_cosine": {"lo": -0.004, "hi": 0.005}, "angle_min_median": {"mean": 59.7}}}
    return {
        "summary": {"geometry": geometry, "per_method": per_method},
        "chance": chance,
        "replicates": 3,
        "layers": [0, 1, 2, 3],
    }


def test_geometry_summary_sets_each_method_against_the_rerun_in_every_replicate():
    text = pa.geometry_summary(_geometry_out(), "sft", "sft_order")
    assert "3 replicates, 4 layers" in text
    assert "rft 0.940 [0.900, 0.970]" in text and "dpo 0.100 [0.000, 0.200]" in text
    assert "rft-dpo" not in text and "0.500" not in text  # only pairs with the reference
    assert "cosine -0.004 to 0.005 (5-95%)" in text
    floor_line = next(line for line in text.splitlines() if "its rerun sft_order" in line)
    assert "lower cosine in every replicate: dpo, online_grpo;" in floor_line
    assert "not lower in every replicate: rift;" in floor_line
    assert "inconclusive (the replicates disagree): rft." in floor_line
    # the smallest principal angle, not the largest; chance beside it
    assert "rft 6 [5, 7]" in text and "81 [80, 82]" not in text and "chance 59.7" in text
    # grpo's share outside sft (the ordered key "grpo-sft"), in the three readings in order
    assert (
        "Share of grpo's update outside sft's, in the three readings: span 0.600, top-k 0.800, direction 0.900."
        in text
    )
    assert "Effective rank" in text and "dpo 6," in text


def test_geometry_summary_without_a_rerun_leaves_the_floor_out():
    out = _geometry_out()
    del out["summary"]["geometry"]["global_cosine"]["sft-sft_order"]
    assert "rerun" not in pa.geometry_summary(out, "sft", "sft_order")


def _by_hand(points):
    """Both barriers of evenly spaced points, written out."""
    n = len(points) - 1
    chord = max(max(p - (points[0] + i / n * (points[-1] - points[0])) for i, p in enumerate(points)), 0.0)
    return {"chord": chord, "endpoint_mean": max(points) - (points[0] + points[-1]) / 2}


@pytest.mark.parametrize("points", [[3.82, 7.06, 8.64], [1.0, 3.5, 3.0, 7.0], [2.0, 1.0, 4.0, 4.5, 3.0]])
def test_study_barriers_take_the_points_evenly_spaced(points):
    got = pa.study_barriers(points)
    expected = _by_hand(points)
    assert got["chord"] == pytest.approx(expected["chord"], abs=1e-12)
    assert got["endpoint_mean"] == pytest.approx(expected["endpoint_mean"], abs=1e-12)


def test_study_barriers_of_the_study_rift_to_dpo_path():
    got = pa.study_barriers([3.82, 7.06, 8.64])
    assert got["chord"] == pytest.approx(0.83) and got["endpoint_mean"] == pytest.approx(2.41)


def test_glue_connectivity_glues_the_numbers_chapter_4_quotes(monkeypatch):
    glued = {}
    monkeypatch.setattr(pa, "glue_values", glued.update)
    study = {"lmc_ce.rift_dpo": {"kind": "points", "value": [3.82, 7.06, 8.64], "unit": "nats/token"}}
    from helpers.claims import BARRIER_MARGIN
    from helpers.connectivity import SATURATED_NATS

    values = pa.glue_connectivity(study)
    assert glued == values
    assert values["lmc_study_chord"] == "0.83" and values["lmc_study_endpoint_mean"] == "2.41"
    assert (
        values["barrier_margin"] == f"{BARRIER_MARGIN:g}"
        and values["saturated_nats"] == f"{SATURATED_NATS:g}"
    )


@pytest.mark.parametrize(
    "pair, control",
    [
        ("sft-sft_order", True),
        ("sft_seed-sft", True),
        ("sft-rft", False),
        ("sft_seed-sft_order", False),
        ("grpo-rift", False),
        ("sft-sft", False),
    ],
)
def test_is_control_pair(pair, control):
    assert pa.is_control_pair(pair) is control


def _barriers():
    return [
        {"sft-sft_order": 0.01, "sft-sft_seed": 0.02, "sft-grpo": 0.075, "rift-dpo": 0.5, "sft-rft": 0.0},
        {"sft-sft_order": 0.00, "sft-sft_seed": 0.03, "sft-grpo": 0.075, "rift-dpo": 0.5, "sft-rft": 0.0},
    ]


def test_separated_counts_judge_each_replicate_against_its_largest_control():
    counts, bars = pa.separated_counts(_barriers(), margin=0.05)
    assert bars == pytest.approx([0.07, 0.08])
    assert counts == {"sft-grpo": (1, 2), "rift-dpo": (2, 2), "sft-rft": (0, 2)}
    # a barrier exactly at the bar is not above it (the findings' "no barrier" is <= the bar)
    at_bar = [{"sft-sft_order": 0.25, "sft-grpo": 0.5, "rift-dpo": 0.625}]
    assert pa.separated_counts(at_bar, margin=0.25)[0] == {"sft-grpo": (0, 1), "rift-dpo": (1, 1)}
    no_control = [{"sft-grpo": 1.0}]
    assert pa.separated_counts(no_control, margin=0.05) == ({}, [None])


def _connectivity_out():
    chord = _barriers()
    other = [{p: 10.0 + i for i, p in enumerate(b)} for b in chord]  # another loss, far larger
    endpoint = [{p: v + 0.1 for p, v in b.items()} for b in chord]
    return {
        "claim_measure": "solution_nll",
        "n_problems": 64,
        "per_replicate": [
            {
                "barrier_all": {"answer_ce": o, "solution_nll": c},
                "barrier_endpoint_mean_all": {"solution_nll": e, "answer_ce": o},
            }
            for c, o, e in zip(chord, other, endpoint, strict=True)
        ],
    }


def test_connectivity_summary_reads_the_claim_measure_and_the_control_bar():
    text = pa.connectivity_summary(_connectivity_out(), margin=0.05)
    lines = text.splitlines()
    assert "64 held-out problems, 2 replicates; the claims read `solution_nll`" in lines[0]
    chord = next(line for line in lines if line.startswith("- Chord barrier on `solution_nll`"))
    assert (
        "sft-grpo 0.075," in chord and "rift-dpo 0.5," in chord and "sft-sft_seed 0.025 [0.02, 0.03]" in chord
    )
    bar = next(line for line in lines if "The bar a path must clear" in line)
    assert "per replicate: 0.07, 0.08;" in bar
    assert (
        "separated in every replicate: rift-dpo" in bar and "not separated in every replicate: sft-rft" in bar
    )
    assert "inconclusive (the replicates disagree): sft-grpo" in bar
    assert "- Largest chord barrier on `solution_nll`: rift-dpo, 0.5." in lines
    assert "- Largest endpoint-mean barrier on `solution_nll`: rift-dpo, 0.6." in lines
    assert "- Largest chord barrier on `answer_ce`: sft-rft, 14." in lines


def _claim(cid, verdicts, checks):
    overall = (
        "holds"
        if set(verdicts) == {"holds"}
        else "does not hold"
        if "holds" not in verdicts
        else "inconclusive"
    )
    return {"id": cid, "verdict": overall, "verdicts": verdicts, "checks": checks}


def _findings_out():
    colinear = {"name": "colinear", "ok": [False, True, True]}
    accuracy = {"name": "same accuracy", "ok": [True, True, True]}
    claims = [
        _claim("i", ["does not hold", "holds", "holds"], [colinear, accuracy]),
        _claim("ii", ["holds"] * 3, [accuracy]),
        _claim("iii", ["does not hold"] * 3, [{"name": "large orthogonal", "ok": [False] * 3}]),
    ]
    definitions = [
        {"claim": "iii", "reading": r, "barrier_kind": b, "verdict": v}
        for r, b, v in [("span", "chord", "holds"), ("direction", "chord", "does not hold")]
    ] + [
        {"claim": "iv", "reading": "span", "barrier_kind": k, "verdict": "holds"}
        for k in ("chord", "endpoint_mean")
    ]
    match = [
        {
            "pair": "grpo-sft",
            "cosine": 0.74,
            "fraction": 0.67,
            "readings": {
                "span": {"reproduces": True},
                "top_k": {"reproduces": False},
                "direction": {"reproduces": False},
            },
        },
        {
            "pair": "online_grpo-sft",
            "cosine": 0.025,
            "fraction": 0.998,
            "readings": {"span": {"reproduces": False}},
        },
    ]
    patterns = [
        {"pattern": "DPO sits apart", "verdict": "same"},
        {"pattern": "base beats the five", "verdict": "not at this scale"},
        {"pattern": "late CKA drops", "verdict": "mixed"},
    ]
    return {
        "replicates": 3,
        "claims": {"study_forms": claims, "published_forms": [claims[1]]},
        "definitions": {"study_forms": definitions},
        "reading_match": match,
        "reproduction": patterns,
    }


def test_findings_summary_gives_each_verdict_with_its_replicates():
    text = pa.findings_summary(_findings_out())
    lines = text.splitlines()
    study = next(line for line in lines if line.startswith("- With the study's forms"))
    assert (
        "(i) inconclusive (holds in 2 of 3); (ii) holds (holds in 3 of 3); (iii) does not hold (holds in 0 of 3)"
        in study
    )
    # the criterion the replicates split on, not the one they agree on
    assert "disagree on: (i) colinear, met in 2 of 3." in study and "same accuracy, met" not in study
    assert "- With the published forms: (ii) holds (holds in 3 of 3)." in lines
    definitions = next(line for line in lines if line.startswith("- Definitions that change"))
    assert (
        "(iii) span/chord: holds, direction/chord: does not hold" in definitions and "(iv)" not in definitions
    )
    assert "- The study's grpo-sft fraction 0.67 (cosine 0.74) is reproduced by the span reading." in lines
    assert "- The study's online_grpo-sft fraction 0.998 (cosine 0.025) is reproduced by no reading." in lines
    assert "3 patterns: 1 same, 0 reversed, 1 not at this scale, 1 mixed; the same: DPO sits apart." in text
