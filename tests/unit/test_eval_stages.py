"""Chapter 06's evaluation: every replicate's models evaluated concurrently, each once (the base
once for all replicates), with the results of evaluating them here, one replicate at a time."""

import json
import shutil

import pytest

from helpers import beyond_measures, eval_stages, evaluate, pipeline
from helpers.geometry import _torch_threads
from helpers.profiles import load_profile

NAMES = ["sft"]


def _model_stages(root):
    """The DONE records of the model evaluation stages under `root`."""
    return [json.loads((f / "DONE.json").read_text()) for f in root.glob(f"{eval_stages.STAGE}-*")]


def test_replicates_evaluated_concurrently_equal_sequential_and_base_once(tmp_path, monkeypatch):
    profile = load_profile("smoke")
    here, there = tmp_path / "here", tmp_path / "there"
    monkeypatch.setenv("WSG_RUNS", str(here))
    with _torch_threads(1):  # as the workers run: bit-identity holds at one thread count
        sequential = [pipeline.evaluation_stage(profile, NAMES, replicate=j) for j in (0, 1)]
    shutil.copytree(here, there, ignore=shutil.ignore_patterns("*evaluation-*"))
    monkeypatch.setenv("WSG_RUNS", str(there))
    # every model is evaluated in a worker: this process only assembles the replicates' folders
    monkeypatch.setattr(evaluate, "evaluate_adapters", lambda *a, **k: pytest.fail("evaluated in the parent"))
    concurrent = eval_stages.evaluation_stages(profile, NAMES, workers=2)
    # the same files, but for the run folder's own path inside them
    assert json.dumps(concurrent).replace(str(there), str(here)) == json.dumps(sequential)
    assert concurrent[0]["sft"]["rows"] != concurrent[1]["sft"]["rows"] or (
        concurrent[0]["sft"]["config"]["adapter_dir"] != concurrent[1]["sft"]["config"]["adapter_dir"]
    )
    root = there / profile.name
    done = _model_stages(root)
    # the base (keyed by what it reads, not by a replicate) once, and each replicate's sft once
    assert sorted(d["inputs"]["adapter"] is None for d in done) == [False, False, True]
    # a second call builds nothing
    before = sorted(p.name for p in root.iterdir())
    assert eval_stages.evaluation_stages(profile, NAMES, workers=2) == concurrent
    assert sorted(p.name for p in root.iterdir()) == before


def test_chapter_08_reuses_chapter_06_model_evaluations(tmp_path, monkeypatch):
    profile = load_profile("smoke")
    monkeypatch.setenv("WSG_RUNS", str(tmp_path))
    chapter_06 = pipeline.evaluation_stage(profile, NAMES)
    runs = {"base": None, "sft": pipeline.adapter_stage(profile, "sft")}
    monkeypatch.setattr(evaluate, "evaluate_adapters", lambda *a, **k: pytest.fail("evaluated again"))
    assert eval_stages.evaluate_models(profile, runs, workers=1) == chapter_06
    accuracy = {name: result["summary"]["accuracy"] for name, result in chapter_06.items()}
    assert beyond_measures._evaluate(profile, runs) == accuracy
