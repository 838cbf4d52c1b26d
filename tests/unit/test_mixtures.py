"""Dose-response mixtures: the wrong rollouts' token share as requested, correct rollouts untouched."""

from __future__ import annotations

from collections import Counter

import pytest

from helpers.mixtures import MixtureError, build_mixture, build_mixtures, completion_tokens, natural_share
from helpers.prompting import tokenize_pair
from tests.builders import make_rollouts, make_tokenizer


def rollouts() -> list[dict]:
    """12 groups of 4; wrong completions carry a rambling tail, so tokens and rows give different shares."""
    rows = make_rollouts(12, 4)
    for i, r in enumerate(rows):
        r["completion"] += f" (row {i})"
        if not r["correct"]:
            r["completion"] += " hmm, wait" * (1 + i % 3)
    return rows


@pytest.fixture(scope="module")
def data() -> tuple[list[dict], list[int]]:
    rows = rollouts()
    return rows, completion_tokens(rows, make_tokenizer(), max_length=256)


def wrong_share(records: list[dict], rows: list[dict], lengths: list[int]) -> float:
    """The wrong-token share of `records`, recounted from the input rollouts."""
    length = {r["completion"]: n for r, n in zip(rows, lengths, strict=True)}
    wrong = sum(length[r["completion"]] for r in records if r["reward"] <= 0)
    return wrong / sum(length[r["completion"]] for r in records)


def test_completion_tokens_are_what_the_loss_sees() -> None:
    tokenizer, rows = make_tokenizer(), rollouts()[:5]
    got = completion_tokens(rows, tokenizer, max_length=40)
    expected = [
        sum(tokenize_pair(tokenizer, r["prompt"], r["completion"], 40)["completion_mask"]) for r in rows
    ]
    assert got == expected and all(n >= 1 for n in got)


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 0.75, "natural"])
def test_realised_share_within_one_row_and_correct_rollouts_fixed(data, share) -> None:
    rows, lengths = data
    mix = build_mixture(rows, share, lengths, seed=0)
    requested = natural_share(rows, lengths) if share == "natural" else share
    realised = wrong_share(mix.records, rows, lengths)
    assert mix.share == pytest.approx(realised) and mix.requested == pytest.approx(requested)
    total = mix.correct_tokens + mix.wrong_tokens
    assert abs(realised - requested) <= max(lengths) / total  # one row of tokens
    assert Counter(r["completion"] for r in mix.records if r["reward"] > 0) == Counter(
        r["completion"] for r in rows if r["reward"] > 0
    )
    counts = Counter(r["completion"] for r in mix.records if r["reward"] <= 0)
    all_wrong = [r["completion"] for r in rows if r["reward"] <= 0]
    if mix.wrong_rows >= len(all_wrong):  # every wrong rollout in before any repeats, repeats balanced
        assert max(counts.values()) - min(counts[c] for c in all_wrong) <= 1
    assert max(counts.values(), default=0) == mix.max_repeats


def test_the_end_points_are_rft_and_sft_data(data) -> None:
    rows, lengths = data
    assert build_mixture(rows, 0.0, lengths, seed=0).records == [r for r in rows if r["reward"] > 0]
    natural = build_mixture(rows, "natural", lengths, seed=0)
    assert natural.records == rows and natural.share == natural_share(rows, lengths)


def test_share_is_of_tokens_not_rows(data) -> None:
    rows, lengths = data
    by_rows = natural_share(rows, [1] * len(rows))
    by_tokens = natural_share(rows, lengths)
    assert by_tokens > by_rows + 0.05  # wrong rollouts are longer here
    mix = build_mixture(rows, 0.5, lengths, seed=0)
    assert mix.wrong_rows / (mix.wrong_rows + mix.correct_rows) < 0.5 - 0.05


def test_deterministic_by_seed(data) -> None:
    rows, lengths = data
    a, b = build_mixture(rows, 0.25, lengths, seed=3), build_mixture(rows, 0.25, lengths, seed=3)
    assert a == b
    assert build_mixture(rows, 0.25, lengths, seed=4).records != a.records
    assert build_mixtures(rows, [0.25, "natural"], lengths, seed=3)["0.25"] == a


def test_unreachable_shares_raise_clear_errors(data) -> None:
    rows, lengths = data
    with pytest.raises(MixtureError, match="in \\[0, 1\\)"):
        build_mixture(rows, 1.0, lengths, seed=0)
    with pytest.raises(MixtureError, match="in \\[0, 1\\)"):
        build_mixture(rows, float("nan"), lengths, seed=0)
    with pytest.raises(MixtureError, match="in \\[0, 1\\)"):
        build_mixture(rows, "most", lengths, seed=0)
    right = [r for r in rows if r["reward"] > 0]
    with pytest.raises(MixtureError, match="needs wrong rollouts"):
        build_mixture(right, 0.25, [1] * len(right), seed=0)
    assert build_mixture(right, 0.0, [1] * len(right), seed=0).records == right
    wrong = [r for r in rows if r["reward"] <= 0]
    with pytest.raises(MixtureError, match="no correct rollout"):
        build_mixture(wrong, 0.5, [1] * len(wrong), seed=0)
    with pytest.raises(MixtureError, match="up to 7 times \\(max_repeats=2\\)"):
        build_mixture(
            rows, 0.9, [1] * len(rows), seed=0, max_repeats=2
        )  # 21 right rows: 189 wrong ones from 27
    with pytest.raises(MixtureError, match="lengths has 3 entries for 48 rollouts"):
        build_mixture(rows, 0.5, [1, 2, 3], seed=0)
