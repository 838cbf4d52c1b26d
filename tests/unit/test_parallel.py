"""Concurrent training: the same adapters as training here, each missing run trained once, in
single-thread worker processes, and a failed run named in the error."""

import os
import shutil

import pytest
from safetensors.torch import load_file

from helpers import parallel, pipeline
from helpers.geometry import _torch_threads
from helpers.profiles import load_profile


def _probe() -> tuple[int, str, str]:
    """Run in a worker: its intra-op threads and thread variables."""
    import torch

    return torch.get_num_threads(), os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"]


def test_worker_count(monkeypatch):
    monkeypatch.delenv(parallel.WORKERS_ENV, raising=False)
    assert parallel.worker_count() == max(1, min(os.cpu_count() or 1, 2))
    monkeypatch.setenv(parallel.WORKERS_ENV, "3")
    assert parallel.worker_count() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(parallel.WORKERS_ENV, bad)
        with pytest.raises(ValueError, match="WSG_WORKERS"):
            parallel.worker_count()


def test_workers_run_single_threaded(monkeypatch):
    # the parent allows two threads; each worker must still run on one
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    with parallel._executor(1) as pool:
        assert pool.submit(_probe).result() == (1, "1", "1")


def _upstream(root, profile):
    """Build the upstream stages in `root` (problems, base, rollouts)."""
    os.environ["WSG_RUNS"] = str(root)
    pipeline.rollouts_stage(profile)


def test_concurrent_runs_equal_runs_trained_here_and_each_is_trained_once(tmp_path, monkeypatch):
    profile = load_profile("smoke")
    here, there = tmp_path / "here", tmp_path / "there"
    monkeypatch.setenv("WSG_RUNS", str(here))
    _upstream(here, profile)
    shutil.copytree(here, there)
    # in this process (workers=1): what was missing is trained once, duplicates and done runs skipped
    calls = []
    real = parallel._run
    monkeypatch.setattr(
        parallel, "_run", lambda missing, w: calls.append(([n for _, n, _ in missing], w)) or real(missing, w)
    )
    jobs = [(profile, "sft"), (profile, "dpo"), (profile, "sft")]
    with _torch_threads(1):  # as the workers run: bit-identity holds at one thread count, on any CPU
        alone = parallel.train_adapters(jobs, workers=1)
    assert calls == [(["sft", "dpo"], 1)] and alone[0] == alone[2] == pipeline.adapter_stage(profile, "sft")
    assert parallel.train_adapters(jobs, workers=2) == alone and len(calls) == 1  # nothing left to train
    # in two worker processes: the same folders' names, the same weights
    monkeypatch.setenv("WSG_RUNS", str(there))
    together = parallel.train_adapters(jobs, workers=2)
    assert calls[-1] == (["sft", "dpo"], 2)
    assert [p.relative_to(there) for p in together] == [p.relative_to(here) for p in alone]
    for mine, theirs in zip(alone, together, strict=True):
        a, b = load_file(mine / "adapter_model.safetensors"), load_file(theirs / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_a_failed_run_stops_the_rest_and_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("WSG_RUNS", str(tmp_path))
    profile = load_profile("smoke")
    with pytest.raises(Exception, match="no_such_method") as failure:
        parallel.train_adapters(
            [(profile, "no_such_method"), (profile, "sft")], workers=2, labels=["bad", "sft"]
        )
    assert any("while training bad" in note for note in getattr(failure.value, "__notes__", []))
    assert not pipeline.adapter_done(profile, "no_such_method")
