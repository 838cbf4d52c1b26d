"""The side-by-side table reads our numbers from the chapters' JSON and never invents one."""

import itertools
import math

import pytest

from helpers.headline import RenameError, headline_table, rename_methods


def _results():
    cos = {
        "sft-rft": 0.9,
        "sft-rift": 0.8,
        "rft-rift": 0.85,
        "dft-sft": 0.5,
        "dft-rift": 0.4,
        "grpo-sft": 0.6,
        "grpo-rft": 0.7,
        "grpo-rift": 0.8,
        "dpo-sft": 0.05,
        "dpo-rft": 0.07,
        "dpo-rift": 0.06,
    }
    return {
        "03_delta_geometry": {
            "geometry": {
                "global_cosine": cos,
                "median_smallest_angle": {"sft-rft": 5.0},
                "orthogonal_fraction": {"grpo-sft": 0.6},
                "orthogonal_fraction_by_layer": {"grpo-sft": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]},
            },
            "per_method": {
                "sft": {"norm": 2.0},
                "rft": {"norm": 3.0},
                "rift": {"norm": 4.0},
                "dpo": {"norm": 0.3},
            },
            "pairs": [],
        },
        "06_evaluation": {"evaluation": {"accuracy": {"dpo": 0.5, "base": 0.25}, "mcnemar_p": {}}},
    }


def test_values_come_from_the_results():
    table = headline_table(_results())
    ours = table["ours_value"]
    assert ours["global_cosine.sft_rft"] == 0.9
    assert math.isclose(ours["global_cosine.grpo_sft_cluster"], (0.6 + 0.7 + 0.8) / 3)
    assert ours["global_cosine.dpo_sft_cluster"] == [0.05, 0.07]
    assert ours["smallest_angle.sft_rft"] == 5.0
    assert ours["orthogonal_fraction.grpo_sft_last5"] == 0.7  # 7 layers: the last one (5/36 of 7)
    assert ours["norm.rft_to_rift"] == [2.0, 4.0]
    assert math.isclose(ours["norm.dpo_smaller_by"], 3.0 / 0.3)
    assert ours["gsm8k.dpo"] == 50.0 and ours["gsm8k.base"] == 25.0
    assert table.loc["global_cosine.sft_rft", "study"] == "0.977"


def test_missing_numbers_are_not_measured():
    table = headline_table(_results())
    assert table.loc["smallest_angle.sft_dpo", "ours"] == "not measured"
    assert table.loc["gsm8k.five", "ours"] == "not measured"  # sft's accuracy is missing
    assert headline_table({})["ours"].eq("not measured").all()


def test_study_forms_replace_the_published_ones():
    from helpers.headline import rename_methods

    results = {
        "geometry": {
            "global_cosine": {
                "sft-rift": 0.1,
                "sft-rift_paper": 0.2,
                "rift_paper-grpo_paper": 0.3,
                "grpo-rift": 0.9,
                "sft-dpo": 0.5,
            }
        },
        "accuracy": {"rift": 0.1, "rift_paper": 0.2, "sft": 0.3},
        "pairs": [{"a": "sft", "b": "grpo", "x": 1}, {"a": "sft", "b": "grpo_paper", "x": 2}],
        "methods": ["sft", "grpo", "grpo_paper"],
    }
    renamed = rename_methods(results)
    assert renamed["geometry"]["global_cosine"] == {"sft-rift": 0.2, "rift-grpo": 0.3, "sft-dpo": 0.5}
    assert renamed["accuracy"] == {"rift": 0.2, "sft": 0.3}
    assert renamed["pairs"] == [{"a": "sft", "b": "grpo", "x": 2}]
    assert renamed["methods"] == ["sft", "grpo"]
    assert rename_methods(results, {}) == results  # no mapping, no change


def test_late_layers_follow_the_models_depth():
    """The study's "last five blocks" are 5 of 36: the last five of a 36-layer model, one of 4."""
    results = _results()
    geo = results["03_delta_geometry"]
    for layers, want in ((36, [0.32, 0.36]), (4, 0.04)):
        geo["geometry"]["orthogonal_fraction_by_layer"]["grpo-sft"] = [i / 100 for i in range(1, layers + 1)]
        geo["layers"] = list(range(layers))
        table = headline_table(results)
        assert table["ours_value"]["orthogonal_fraction.grpo_sft_last5"] == pytest.approx(want)
        n = 5 if layers == 36 else 1
        assert (
            f"the last {n} of {layers} blocks" in table.loc["orthogonal_fraction.grpo_sft_last5", "quantity"]
        )


def test_the_study_forms_do_not_collide_with_a_published_run():
    """Chapter 07 showed 0.612 for GRPO's cosine to SFT/RFT/RIFT with the study's forms, where
    chapter 03 gives 0.859, 0.849, 0.853: grpo-rift_paper (published GRPO against the study's
    RIFT, 0.129) was renamed to grpo-rift and averaged in."""
    cos = {
        "sft-rift": 0.9,
        "sft-grpo": 0.5,
        "rft-grpo": 0.5,
        "rift-grpo": 0.5,
        "sft-rift_paper": 0.95,
        "grpo-rift_paper": 0.129,
        "sft-grpo_paper": 0.859,
        "rft-grpo_paper": 0.849,
        "rift_paper-grpo_paper": 0.853,
    }  # fmt: skip  (in the order pairwise_report writes them)
    results = {"03_delta_geometry": {"geometry": {"global_cosine": cos}}}
    renamed = rename_methods(results)
    assert renamed["03_delta_geometry"]["geometry"]["global_cosine"] == {
        "sft-rift": 0.95, "sft-grpo": 0.859, "rft-grpo": 0.849, "rift-grpo": 0.853,
    }  # fmt: skip
    value = headline_table(renamed)["ours_value"]["global_cosine.grpo_sft_cluster"]
    assert value == pytest.approx((0.859 + 0.849 + 0.853) / 3)


def test_a_rename_that_would_merge_two_entries_is_an_error():
    twice = {"a_x": "a", "a_y": "a"}  # two runs would take one name
    with pytest.raises(RenameError, match="would both become 'sft-a'"):
        rename_methods({"cos": {"sft-a_x": 0.1, "sft-a_y": 0.2}}, twice)
    with pytest.raises(RenameError, match="twice in a list"):
        rename_methods({"pairs": [{"a": "sft", "b": "a_x"}, {"a": "sft", "b": "a_y"}]}, twice)
    with pytest.raises(RenameError, match="twice in a list"):
        rename_methods({"methods": ["a_x", "a_y"]}, twice)
    with pytest.raises(RenameError, match="both renamed and replaced"):
        rename_methods({}, {"x": "y", "y": "z"})
    # lists whose items repeat before any renaming are left alone (answers, labels)
    assert rename_methods({"answers": ["12", "12"]}) == {"answers": ["12", "12"]}


def test_controls_mcnemar_and_effective_rank_rows():
    results = _results()
    per = results["03_delta_geometry"]["per_method"]
    per["dpo_samelr"] = {"norm": 0.9}
    results["03_delta_geometry"]["geometry"]["global_cosine"]["dpo-dpo_samelr"] = 0.55
    for name, median, mean in (
        ("sft", 16.0, 3.0),
        ("rft", 15.0, 3.0),
        ("dft", 14.0, 3.0),
        ("rift", 13.0, 3.0),
    ):
        per[name].update(
            {"effective_rank_median": median, "effective_rank_mean": mean}
        ) if name in per else None
        per.setdefault(name, {"effective_rank_median": median, "effective_rank_mean": mean})
    per["grpo"] = {"effective_rank_median": 14.8, "effective_rank_mean": 1.0}
    results["02_training"] = {"runs": {"dpo": {"lr": 3e-5}, "dpo_samelr": {"lr": 1e-3}}}
    five = ("sft", "rft", "dft", "rift", "grpo")
    p = {f"{a}-{b}": 0.2 + 0.01 * i for i, (a, b) in enumerate(itertools.combinations(five, 2))}
    results["06_evaluation"]["evaluation"]["mcnemar_p"] = p
    table = headline_table(results)
    ours = table["ours_value"]
    assert ours["controls.lr10x_cosine"] == 0.55
    assert ours["controls.lr10x_norm_ratio"] == pytest.approx(0.9 / 0.3)
    assert "33.3x" in table.loc["controls.lr10x_cosine", "quantity"]
    assert ours["mcnemar.among_five"] == [pytest.approx(0.2), pytest.approx(0.29)]
    assert ours["effective_rank.sft_rft_dft_rift"] == pytest.approx(14.5)  # the medians, not the means
    assert ours["effective_rank.grpo"] == 14.8 and "median" in table.loc["effective_rank.grpo", "quantity"]
    del p["sft-grpo"]
    assert headline_table(results)["ours"]["mcnemar.among_five"] == "not measured"
