"""The barrier table of chapter 04: both kinds on both measures, and the bar a barrier must clear."""

from __future__ import annotations

import pytest

from helpers.claims import BARRIER_MARGIN
from helpers.compare import barrier_frame


def _lmc():
    from helpers.connectivity import barrier

    paths = {
        "rift-dpo": {"ts": [0.0, 0.5, 1.0], "answer_ce": [3.82, 7.06, 8.64], "solution_nll": [1.0, 1.5, 1.0]},
        "sft-sft_order": {
            "ts": [0.0, 0.5, 1.0],
            "answer_ce": [2.0, 2.1, 2.0],
            "solution_nll": [1.0, 1.0, 1.0],
        },
        "sft-sft_seed": {
            "ts": [0.0, 0.5, 1.0],
            "answer_ce": [2.0, 2.3, 2.2],
            "solution_nll": [1.0, 1.2, 1.0],
        },
    }
    out = {"paths": paths}
    for kind, key in (("chord", "barrier"), ("endpoint_mean", "barrier_endpoint_mean")):
        out[key] = {
            m: {p: barrier(c["ts"], c[m], kind=kind) for p, c in paths.items()}
            for m in ("answer_ce", "solution_nll")
        }
    return out


def test_barrier_frame_has_both_kinds_and_the_control_bar():
    table = barrier_frame(_lmc())
    assert table.loc["rift-dpo", "chord barrier (answer_ce)"] == pytest.approx(0.83)
    assert table.loc["rift-dpo", "endpoint_mean barrier (answer_ce)"] == pytest.approx(2.41)
    assert table.loc["rift-dpo", "answer_ce at a"] == 3.82 and table.loc["rift-dpo", "answer_ce at b"] == 8.64
    bar = table.loc["a barrier must exceed"]
    # the largest control barrier (sft_seed: 0.2 chord, 0.2 endpoint-mean on answer CE) plus the margin
    assert bar["chord barrier (answer_ce)"] == pytest.approx(0.3 - 0.1 + BARRIER_MARGIN)
    assert bar["endpoint_mean barrier (answer_ce)"] == pytest.approx(2.3 - 2.1 + BARRIER_MARGIN)
    assert bar["chord barrier (solution_nll)"] == pytest.approx(0.2 + BARRIER_MARGIN)
    without = barrier_frame(_lmc(), controls=())
    assert without.loc["a barrier must exceed", "chord barrier (answer_ce)"] == pytest.approx(BARRIER_MARGIN)
