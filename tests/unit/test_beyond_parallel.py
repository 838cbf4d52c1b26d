"""Chapter 08 trains its missing runs concurrently: the same weights as training them one by one,
each missing run trained once, nothing trained again on a rerun."""

from __future__ import annotations

import dataclasses
import shutil

from safetensors.torch import load_file

from helpers import beyond, parallel, pipeline
from helpers.geometry import _torch_threads
from helpers.profiles import load_profile, profile_source
from helpers.replicates import replicate_ids, replicate_profile


def _small_smoke():
    """Smoke with two main methods (what the mixtures reuse) and two replicates: a few seconds a run."""
    profile = load_profile("smoke")
    train = dataclasses.replace(profile.train, methods=["sft", "rft"], replicates=2)
    small = dataclasses.replace(profile, train=train)
    object.__setattr__(small, "_source", profile_source(profile))
    return small


def _weights(folder):
    return load_file(folder / "adapter_model.safetensors")


def _chapter_runs(profile, design):
    return {
        (j, kind, key): path
        for run in beyond.collect_runs(profile, design)
        for j in [run.replicate]
        for kind, group in (("mixture", run.mixtures), ("contrastive", run.contrastive))
        for key, path in group.items()
    }


def test_missing_runs_train_concurrently_to_the_same_weights_once(tmp_path, monkeypatch):
    profile = _small_smoke()
    design = beyond.design_for(profile, "0,0.5,natural", "simpo", 1)
    here, there = tmp_path / "here", tmp_path / "there"
    monkeypatch.setenv("WSG_RUNS", str(here))
    pipeline.rollouts_stage(profile)
    main = [(replicate_profile(profile, j), m) for j in replicate_ids(profile) for m in profile.train.methods]
    parallel.train_adapters(main, workers=1)  # the main runs the mixtures reuse: in both folders
    shutil.copytree(here, there)

    calls = []
    real = parallel.run_calls
    monkeypatch.setattr(
        parallel, "run_calls", lambda c, w=None: calls.append(([x[2] for x in c], w)) or real(c, w)
    )
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    with _torch_threads(1):  # as the workers run: bit-identity holds at one thread count, on any CPU
        alone = _chapter_runs(profile, design)
    expected = ["mixture 0.5 (replicate 0)", "simpo (replicate 0)", "mixture 0.5 (replicate 1)"]
    assert calls == [(expected, None)]
    assert _chapter_runs(profile, design) == alone and len(calls) == 1  # a rerun trains nothing

    monkeypatch.setenv("WSG_RUNS", str(there))
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    together = _chapter_runs(profile, design)
    assert len(calls) == 2 and calls[-1][0] == expected
    assert {k: p.relative_to(there) for k, p in together.items()} == {
        k: p.relative_to(here) for k, p in alone.items()
    }
    for key, path in alone.items():
        a, b = _weights(path), _weights(together[key])
        assert a.keys() == b.keys() and all((a[n] == b[n]).all() for n in a), key
