"""Numbers over replicates: mean, min, max over what each replicate measured, and tables of them."""

import math

import pandas as pd
import pytest

from helpers.spread import is_summary, means, spread_frame, spread_text, summarise, summarise_tree


def test_summarise_is_mean_min_max_over_the_replicates_that_measured():
    s = summarise([0.5, 0.9, 0.7])
    assert s["mean"] == pytest.approx(0.7) and (s["min"], s["max"], s["n"]) == (0.5, 0.9, 3)
    assert s["values"] == [0.5, 0.9, 0.7]  # in replicate order
    gap = summarise([0.2, None, float("nan"), 0.4])
    assert gap["mean"] == pytest.approx(0.3) and gap["n"] == 2 and gap["values"] == [0.2, None, None, 0.4]
    assert summarise([None, None])["mean"] is None and summarise([None])["n"] == 0


def test_summarise_tree_keeps_the_block_shape():
    blocks = [
        {"cos": {"a-b": 0.9, "a-c": 0.1}, "by_layer": {"a-b": [1.0, 2.0]}, "measure": "ce", "only0": 3.0},
        {"cos": {"a-b": 0.7, "a-c": 0.3}, "by_layer": {"a-b": [3.0, 6.0]}, "measure": "ce"},
    ]
    tree = summarise_tree(blocks)
    assert is_summary(tree["cos"]["a-b"]) and tree["cos"]["a-b"]["mean"] == pytest.approx(0.8)
    layer = tree["by_layer"]["a-b"]
    assert layer["mean"] == [2.0, 4.0] and layer["min"] == [1.0, 2.0] and layer["max"] == [3.0, 6.0]
    assert layer["values"] == [[1.0, 2.0], [3.0, 6.0]]
    assert tree["measure"] == "ce"  # agreed everywhere: kept as is
    assert tree["only0"]["n"] == 1 and tree["only0"]["values"] == [3.0, None]  # absent counts as None
    assert means(tree)["cos"] == {"a-b": pytest.approx(0.8), "a-c": pytest.approx(0.2)}
    assert summarise_tree([{"m": "x"}, {"m": "y"}])["m"] == ["x", "y"]  # disagreeing text: every one
    with pytest.raises(ValueError, match="by_layer"):
        summarise_tree([{"by_layer": [1.0, 2.0]}, {"by_layer": [1.0]}])


def test_spread_text_and_frame():
    assert spread_text(summarise([1.0, 3.0])) == "2 (1 to 3)"
    assert spread_text(summarise([2.0, 2.0])) == "2"
    assert spread_text(summarise([2.0, None, None])) == "2 [1 of 3]"
    assert spread_text(summarise([None])) == ""
    first = pd.DataFrame({"lr": [0.1, 0.1], "loss": [1.0, 2.0], "method": ["sft", "dpo"], "seed": [42, 42]})
    second = pd.DataFrame({"lr": [0.1], "loss": [3.0], "method": ["sft"], "seed": [1042]})
    table = spread_frame([first.set_index("method", drop=False), second.set_index("method", drop=False)])
    assert table.loc["sft", "loss"] == "2 (1 to 3)" and table.loc["sft", "lr"] == "0.1"
    assert table.loc["dpo", "loss"] == "2 [1 of 2]"  # measured in one replicate only, and says so
    assert table.loc["sft", "method"] == "sft"
    two = spread_frame([first.set_index(["method", "seed"]), second.set_index(["method", "seed"])])
    assert list(two.index.names) == ["method", "seed"] and two.loc[("sft", 1042), "loss"] == "3 [1 of 2]"
    listed = spread_frame([first, second], listed=["seed"])
    assert listed.loc[0, "seed"] == "42 / 1042" and not math.isnan(float(listed.loc[0, "loss"].split()[0]))
