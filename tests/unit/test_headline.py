"""The side-by-side table reads our numbers from the chapters' JSON and never invents one."""

import math

from helpers.headline import headline_table


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
    assert ours["orthogonal_fraction.grpo_sft_last5"] == [0.3, 0.7]
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
