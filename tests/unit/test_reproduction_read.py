"""The readers under the reproduction patterns: an ordered measure (the orthogonal fraction of b
against a) is never read from the other direction, an unordered one (a cosine) is read either way,
and anything not a finite number counts as missing."""

from __future__ import annotations

import math

from helpers import reproduction as rp
from helpers.reproduction_read import _chapters, _num, _pair
from helpers.study import load_study

STUDY = load_study()


def _geometry(**tables) -> dict:
    return {"03_delta_geometry": {"geometry": tables}}


def test_an_ordered_pair_is_not_read_from_the_other_direction():
    table = {"sft-grpo": 0.9}
    assert _pair(table, "grpo", "sft", ordered=True) is None
    assert _pair(table, "sft", "grpo", ordered=True) == 0.9
    # SFT against GRPO's column space is another measure than GRPO against SFT's: not a stand-in
    only_reverse = _geometry(orthogonal_fraction={"sft-grpo": 0.9})
    assert rp.grpo_orthogonal(only_reverse, STUDY)["verdict"] == rp.NOT_MEASURED
    forward = _geometry(orthogonal_fraction={"grpo-sft": 0.9})
    assert rp.grpo_orthogonal(forward, STUDY)["verdict"] == rp.SAME


def test_an_unordered_pair_is_read_either_way():
    table = {"rft-sft": 0.7}
    assert _pair(table, "sft", "rft") == _pair(table, "rft", "sft") == 0.7
    assert _pair(None, "sft", "rft") is None


def test_only_finite_numbers_count():
    assert [_num(x) for x in (1, 0.5)] == [1.0, 0.5]
    assert all(_num(x) is None for x in (True, math.nan, math.inf, "0.5", None))


def test_chapter_07s_merged_dict_maps_onto_the_chapters():
    merged = {"geometry": {"global_cosine": {"sft-rft": 0.9}}, "connectivity": {"curves": {"a-b": {}}}}
    chapters = _chapters(merged)
    assert chapters["03_delta_geometry"]["geometry"]["global_cosine"] == {"sft-rft": 0.9}
    assert chapters["04_mode_connectivity"]["paths"] == {"a-b": {}}
    keyed = {"03_delta_geometry": {}}
    assert _chapters(keyed) is keyed
