"""helpers.measure_text: chapter 04's choice of connectivity loss, written from the run's numbers."""

from __future__ import annotations

import math

import pytest

from helpers.measure_text import measure_choice_markdown


def summary(base_ce=11.0, rise=-0.0002, after_max=0.006, solution=(0.022, 0.013, 0.16)):
    log_v = math.log(512)
    return {
        "answer_ce": {
            "base": base_ce,
            "adapters_min": 8.85,
            "adapters_max": 11.3,
            "log_vocab": log_v,
            "off_distribution": base_ce > log_v,
            "saturated": False,
            "largest_chord_barrier": 0.31,
        },
        "answer_ce_after_solution": {
            "base": 0.001,
            "adapters_min": 0.0006,
            "adapters_max": after_max,
            "log_vocab": log_v,
            "off_distribution": False,
            "saturated": after_max < 0.01,
            "largest_chord_barrier": 0.0,
        },
        "solution_nll": {
            "base": solution[0],
            "adapters_min": solution[1],
            "adapters_max": solution[2],
            "log_vocab": log_v,
            "off_distribution": False,
            "saturated": False,
            "largest_chord_barrier": rise,
        },
    }


def test_states_the_numbers_the_choice_and_why_no_barrier():
    text = measure_choice_markdown([summary(), summary()], "solution_nll")
    assert "is 11 on the base" in text and "6.24" in text  # log 512
    assert "worse than uniform" in text
    assert "below 0.01 nats/token at every endpoint" in text
    assert "read the **solution NLL (nats/token)**" in text and "chord barrier" in text
    assert "It is 0.022 on the base, 0.013 to 0.16 on the adapters" in text
    assert "shows no barrier on any path" in text and "-0.0002" in text


def test_replicates_that_differ_show_mean_and_range():
    text = measure_choice_markdown([summary(base_ce=10.0), summary(base_ce=12.0)], "solution_nll")
    assert "is 11 (10 to 12) on the base" in text


def test_no_claim_of_no_barrier_when_one_replicate_rises():
    text = measure_choice_markdown([summary(), summary(rise=0.05)], "solution_nll")
    assert "shows no barrier" not in text
    assert "largest rise above the chord over the paths is" in text


def test_only_what_holds_in_every_replicate_is_said():
    on_distribution = measure_choice_markdown([summary(), summary(base_ce=5.0)], "solution_nll")
    assert "worse than uniform" not in on_distribution
    not_saturated = measure_choice_markdown([summary(), summary(after_max=0.5)], "solution_nll")
    assert "below 0.01" not in not_saturated


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no replicate"):
        measure_choice_markdown([], "solution_nll")
    with pytest.raises(ValueError, match="lack no_such_measure"):
        measure_choice_markdown([summary()], "no_such_measure")
