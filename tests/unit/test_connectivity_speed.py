"""The speed levers of chapter 04 leave its numbers as they were: each model state scored once
(bit-identical curves, fewer forward passes) and length-sorted batches (equal to scoring each row
alone, within float32 rounding)."""

import pytest
import torch
import torch.nn.functional as F

import helpers.connectivity as connectivity
from helpers.compare import connectivity_report, connectivity_reports
from helpers.connectivity import (
    MEASURES,
    encode_problems,
    heldout_losses,
    length_batches,
    path_losses,
    ray_losses,
)
from helpers.deltas import load_deltas
from tests.unit.test_connectivity import LOSS_TOL, PROBLEMS, base_model, save_adapter, tokenizer_for

# rows of different lengths, the longest first, so sorting by length reorders them
LONG = {
    "id": "p3",
    "question": "Tom has 3 apples and 5 pens and 2 bags of 6 . Mia gives 2 away . How many ?",
    "solution": "3 + 4 = 7 .\n5 - 2 = 3 .\n2 * 6 = 12 .\n#### 12",
    "answer": "12",
}
ROWS = [LONG, *PROBLEMS]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tokenizer = tokenizer_for(ROWS)
    root = tmp_path_factory.mktemp("adapters")
    vocab = len(tokenizer)
    folders = {name: save_adapter(root / name, vocab, seed) for name, seed in (("a", 1), ("b", 2), ("c", 3))}
    return tokenizer, vocab, folders


def counted(model):
    """The model, and a list that grows by one per forward pass."""
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return model, calls


def test_each_state_scored_once_and_curves_unchanged(setup):
    tokenizer, vocab, folders = setup
    deltas = {name: load_deltas(folder) for name, folder in folders.items()}
    model, calls = counted(base_model(vocab))
    heldout_losses(model, encode_problems(tokenizer, ROWS), batch_size=2)
    per_state = len(calls)
    calls.clear()
    report = connectivity_report(model, tokenizer, deltas, ["a-b", "b-c"], ROWS, points=3, batch_size=2)
    # states: a, b, c, the two path midpoints, the base, the three ray midpoints (15 curve points)
    assert len(calls) == 9 * per_state
    for pair in ("a-b", "b-c"):
        x, y = pair.split("-")
        alone = path_losses(model, tokenizer, deltas[x], deltas[y], ROWS, [0.0, 0.5, 1.0], batch_size=2)
        assert report["paths"][pair] == alone  # bit-identical
    for name, d in deltas.items():
        assert report["rays"][name] == ray_losses(model, tokenizer, d, ROWS, [0.0, 0.5, 1.0], batch_size=2)


def test_base_scored_once_over_replicates(setup):
    tokenizer, vocab, folders = setup
    model, calls = counted(base_model(vocab))
    heldout_losses(model, encode_problems(tokenizer, ROWS), batch_size=2)
    per_state = len(calls)
    calls.clear()
    runs = [dict(folders), dict(folders)]
    first, second = connectivity_reports(
        model, tokenizer, runs, ["a-b"], ROWS, points=3, batch_size=2, workers=1
    )
    # a, b, c, the path midpoint, the base, three ray midpoints; the second replicate without the base
    assert len(calls) == (8 + 7) * per_state
    assert first == second


@pytest.mark.parametrize("max_tokens", [None, 1, 40, 100])
def test_length_batches_cover_every_row_within_limits(max_tokens):
    lengths = [30, 5, 17, 5, 60, 12, 29]
    batches = length_batches(lengths, 3, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [i for b in batches for i in b]
    assert [lengths[i] for i in flat] == sorted(lengths) and flat.index(1) < flat.index(3)
    for b in batches:
        assert 1 <= len(b) <= 3
        if max_tokens is not None and len(b) > 1:
            assert len(b) * max(lengths[i] for i in b) <= max_tokens
    assert length_batches([], 3, max_tokens) == []


def reference_losses(model, encoded):
    """Each row scored alone, the NLLs of all scored tokens summed in float64."""
    out = {}
    for measure in MEASURES:
        total, count = 0.0, 0
        for row in encoded[measure]:
            ids = torch.tensor([row["input_ids"]])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, :-1]
            nll = F.cross_entropy(logits.float(), ids[0, 1:], reduction="none")
            scored = torch.tensor(row["completion_mask"][1:]).bool()
            total += float(nll[scored].double().sum())
            count += int(scored.sum())
        out[measure] = total / count
    return out


@pytest.mark.parametrize("budget", [1, 60, 10**6])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_length_sorted_batches_equal_rows_scored_alone(setup, monkeypatch, budget, batch_size):
    tokenizer, vocab, _ = setup
    model = base_model(vocab).eval()
    encoded = encode_problems(tokenizer, ROWS)
    assert len({len(r["input_ids"]) for r in encoded["solution_nll"]}) > 1
    monkeypatch.setattr(connectivity, "CPU_BATCH_TOKENS", budget)
    got = heldout_losses(model, encoded, batch_size=batch_size)
    want = reference_losses(model, encoded)
    for measure in MEASURES:
        assert got[measure] == pytest.approx(want[measure], abs=LOSS_TOL)
