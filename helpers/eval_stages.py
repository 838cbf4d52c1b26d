"""Greedy evaluation, one cached stage per model: the base, or the base plus one adapter.

The base model is the same in every replicate, so its stage (keyed by what it reads: the base,
the problem set and the decoding knobs, not by a replicate) is built once and reused; the
models of every replicate are evaluated concurrently in single-thread processes
(`evaluation_stages`). `pipeline.evaluation_stage` assembles a replicate's files from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cache import atomic_write_json, cached_stage, is_done, read_json, stable_hash, stage_folder
from .profiles import Profile

STAGE = "model-evaluation"
VERSION = 1
RESULT = "evaluation.json"


def model_evaluation_inputs(
    profile: Profile, adapter: Path | None, source: str | None = None, path: str | None = None
) -> dict[str, Any]:
    """What one model's evaluation reads: the evaluation stage's inputs, this adapter in place of
    the replicate's runs (None: the base alone), and the batch size (greedy rows are padded to it)."""
    from .pipeline import _evaluation_inputs

    inputs = _evaluation_inputs(profile, {}, source, path)
    del inputs["runs"]
    adapter_key = None if adapter is None else str(adapter)
    return {**inputs, "v": VERSION, "adapter": adapter_key, "batch_size": profile.analysis.eval_batch_size}


def model_evaluation_done(
    profile: Profile, adapter: Path | None, source: str | None = None, path: str | None = None
) -> bool:
    """Whether this model's evaluation stage is built (nothing is built here)."""
    from .pipeline import run_root

    inputs = model_evaluation_inputs(profile, adapter, source, path)
    return is_done(stage_folder(STAGE, inputs, run_root(profile)))


def model_evaluation_stage(
    profile: Profile,
    adapter: Path | None,
    source: str | None = None,
    path: str | None = None,
    name: str = "model",
) -> Path:
    """The folder holding `evaluation.json`: the base (adapter None) or base + adapter, greedy on
    the held-out set (or `source`/`path`). `name` only labels the progress bar."""
    from .evaluate import evaluate_adapters, load_eval_set
    from .pipeline import resolve_device, run_root, student_dir

    a = profile.analysis

    def build(tmp: Path) -> None:
        problems = load_eval_set(profile, source=source, path=path)
        result = evaluate_adapters(
            student_dir(profile),
            {name: adapter},
            problems,
            a.eval_max_new_tokens,
            a.eval_batch_size,
            device=resolve_device(profile),
        )
        atomic_write_json(tmp / RESULT, result[name])

    return cached_stage(
        STAGE, model_evaluation_inputs(profile, adapter, source, path), build, run_root(profile)
    )


def _evaluate_one(
    profile: Profile, adapter: Path | None, source: str | None, path: str | None, name: str
) -> str:
    """Worker job: build one model's evaluation stage; its folder."""
    from .pipeline import configure_environment

    configure_environment(profile)
    return str(model_evaluation_stage(profile, adapter, source, path, name))


def evaluation_stages(
    profile: Profile,
    names: list[str] | None = None,
    source: str | None = None,
    path: str | None = None,
    workers: int | None = None,
) -> list[dict[str, dict]]:
    """`pipeline.evaluation_stage` of every replicate, in order, after evaluating every missing
    model of every replicate once (the base once for all) in `workers` single-thread processes
    (default `parallel.worker_count()`; 1 = here)."""
    from .parallel import map_calls
    from .pipeline import adapters, evaluation_done, evaluation_stage
    from .replicates import replicate_ids

    jobs: dict[str, tuple] = {}
    for j in replicate_ids(profile):
        runs = adapters(profile, names, j)
        if evaluation_done(profile, runs, source, path):
            continue
        for name, adapter in {"base": None, **runs}.items():
            key = stable_hash(model_evaluation_inputs(profile, adapter, source, path))
            if key not in jobs and not model_evaluation_done(profile, adapter, source, path):
                label = "base" if adapter is None else f"{name} (replicate {j})"
                jobs[key] = (_evaluate_one, (profile, adapter, source, path, name), label)
    map_calls(list(jobs.values()), workers, "evaluating")
    return [evaluation_stage(profile, names, source, path, j) for j in replicate_ids(profile)]


def evaluate_models(
    profile: Profile, runs: dict[str, Path | None], workers: int | None = None
) -> dict[str, dict[str, Any]]:
    """The held-out result of each named model (None: the base), evaluating the missing ones first
    in `workers` single-thread processes (default `parallel.worker_count()`; 1 = here)."""
    from .parallel import map_calls

    missing = {}
    for name, adapter in runs.items():
        key = stable_hash(model_evaluation_inputs(profile, adapter))
        if key not in missing and not model_evaluation_done(profile, adapter):
            missing[key] = (_evaluate_one, (profile, adapter, None, None, name), name)
    map_calls(list(missing.values()), workers, "evaluating")
    return {
        name: read_model_evaluation(model_evaluation_stage(profile, a, name=name)) for name, a in runs.items()
    }


def read_model_evaluation(folder: Path) -> dict[str, Any]:
    """The result a model evaluation stage holds."""
    return read_json(Path(folder) / RESULT)
