"""tokenize_pair: the exact prompt/completion boundary, EOS, and what happens when a pair is too long."""

from __future__ import annotations

import pytest
from datasets import Dataset

from helpers.prompting import tokenize_pair
from helpers.trainer import tokenize_dataset
from tests.builders import make_tokenizer

PROMPT = "Question: how many apples ? Answer:"  # 6 words
SHORT = "three apples #### 3"  # 4 words
LONG = "one two three four five six seven eight nine ten #### 10"  # 12 words


@pytest.fixture(scope="module")
def tok():
    """One id per word, so lengths and boundaries are countable by eye."""
    return make_tokenizer(texts=[PROMPT, SHORT, LONG], word_level=True)


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_exact_boundary_and_eos(tok) -> None:
    row = tokenize_pair(tok, PROMPT, SHORT, max_length=64)
    assert row["input_ids"] == ids(tok, PROMPT) + ids(tok, SHORT) + [tok.eos_token_id]
    assert row["completion_mask"] == [0] * 6 + [1] * 5
    assert not row["truncated"] and not row["dropped"]


def test_fits_exactly_with_eos(tok) -> None:
    row = tokenize_pair(tok, PROMPT, SHORT, max_length=6 + 4 + 1)
    assert row["input_ids"][-1] == tok.eos_token_id and not row["truncated"]


def test_long_pair_keeps_the_whole_prompt_and_cuts_the_completion_from_the_right(tok) -> None:
    row = tokenize_pair(tok, PROMPT, LONG, max_length=10)
    assert row["input_ids"] == ids(tok, PROMPT) + ids(tok, LONG)[:4]  # the first four words survive
    assert row["completion_mask"] == [0] * 6 + [1] * 4
    assert tok.eos_token_id not in row["input_ids"]
    assert row["truncated"] and not row["dropped"]
    only_eos_cut = tokenize_pair(tok, PROMPT, SHORT, max_length=6 + 4)
    assert only_eos_cut["input_ids"] == ids(tok, PROMPT) + ids(tok, SHORT) and only_eos_cut["truncated"]


def test_prompt_leaving_no_room_is_dropped(tok) -> None:
    one = tokenize_pair(tok, PROMPT, LONG, max_length=7)  # room for exactly one completion token
    assert one["input_ids"] == ids(tok, PROMPT) + ids(tok, LONG)[:1] and one["truncated"]
    for max_length in (6, 3):
        row = tokenize_pair(tok, PROMPT, SHORT, max_length=max_length)
        assert row["dropped"] and row["input_ids"] == [] and row["completion_mask"] == []


def test_tokenize_dataset_counts_kept_truncated_dropped(tok) -> None:
    long_prompt = PROMPT + " " + " ".join(["apples"] * 10)  # 16 words
    rows = [
        {"prompt": PROMPT, "completion": SHORT},  # kept whole (11 tokens)
        {"prompt": PROMPT, "completion": LONG},  # truncated
        {"prompt": long_prompt, "completion": SHORT},  # dropped
    ]
    ds, counts = tokenize_dataset(Dataset.from_list(rows), tok, "sft", max_length=12, return_counts=True)
    assert counts == {"kept": 2, "truncated": 1, "dropped": 1}
    assert ds["truncated"] == [False, True] and all(len(r) <= 12 for r in ds["input_ids"])
    assert ds["input_ids"][1][:6] == ids(tok, PROMPT)


def test_dpo_pair_counts_either_side(tok) -> None:
    long_prompt = PROMPT + " " + " ".join(["apples"] * 10)
    pairs = [
        {"prompt": PROMPT, "chosen": SHORT, "rejected": SHORT},
        {"prompt": PROMPT, "chosen": SHORT, "rejected": LONG},  # rejected cut: the pair is truncated
        {"prompt": long_prompt, "chosen": SHORT, "rejected": SHORT},  # dropped
    ]
    ds, counts = tokenize_dataset(Dataset.from_list(pairs), tok, "dpo", max_length=12, return_counts=True)
    assert counts == {"kept": 2, "truncated": 1, "dropped": 1}
    assert (
        ds["chosen_input_ids"][1][-1] == tok.eos_token_id
        and ds["rejected_input_ids"][1][-1] != tok.eos_token_id
    )


def test_every_row_dropped_is_an_error(tok) -> None:
    with pytest.raises(ValueError, match="max_length"):
        tokenize_dataset(
            Dataset.from_list([{"prompt": PROMPT, "completion": SHORT}]), tok, "sft", max_length=4
        )
