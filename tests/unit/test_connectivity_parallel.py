"""Chapter 04 over replicates in worker processes (one per replicate) gives the numbers of the
one-thread sequential run bit for bit, each report in its replicate's place."""

import pytest

from helpers import parallel
from helpers.compare import connectivity_reports
from helpers.geometry import _torch_threads
from tests.unit.test_connectivity import base_model, save_adapter
from tests.unit.test_connectivity_speed import ROWS
from tests.unit.test_connectivity_speed import setup as setup  # noqa: F401 (the fixture)


def test_workers_equal_sequential_one_thread_run(setup, tmp_path):  # noqa: F811
    tokenizer, vocab, folders = setup
    model = base_model(vocab)
    # replicates that differ (c's update in place of b's in the second), of different sizes
    other = {"a": folders["a"], "b": save_adapter(tmp_path / "b2", vocab, 7)}
    runs = [dict(folders), other, {"a": folders["a"], "c": folders["c"]}, dict(folders)]
    pairs = ["a-b", "b-c", "a-c"]
    with _torch_threads(1):  # as the workers run: bit-identity holds at one thread count
        here = connectivity_reports(model, tokenizer, runs, pairs, ROWS, points=3, batch_size=2, workers=1)
    there = connectivity_reports(model, tokenizer, runs, pairs, ROWS, points=3, batch_size=2, workers=2)
    # a model sent as tensors would share its memory with every worker: they would score one
    # another's merged weights (caught in most runs, as the workers overlap)
    assert there == here
    assert list(there[1]["paths"]) == ["a-b"] and list(there[2]["paths"]) == ["a-c"]
    assert there[0]["rays"]["b"] != there[1]["rays"]["b"]


def test_failed_replicate_is_named(setup, monkeypatch):  # noqa: F811
    tokenizer, vocab, folders = setup
    runs = [dict(folders), {"a": folders["a"], "b": folders["a"].parent / "missing"}]
    with pytest.raises(Exception) as failure:
        connectivity_reports(base_model(vocab), tokenizer, runs, ["a-b"], ROWS, points=3, workers=2)
    assert any("replicate 1" in note for note in getattr(failure.value, "__notes__", []))
    assert parallel.worker_count() >= 1
