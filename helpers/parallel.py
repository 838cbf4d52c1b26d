"""Independent training runs as concurrent single-thread processes.

The tiny model's matrices are small: a second thread speeds one training step up far less
than 2x, while two single-thread processes keep two cores busy. `train_adapters` trains the
missing adapter stages of a list of (replicate profile, run name) in `workers` spawned
processes, each limited to one thread, with one combined progress line; `workers = 1`
trains them here, in order, as `pipeline.adapters` does. `worker_count()` is
min(cores, 2) unless $WSG_WORKERS says otherwise.

Concurrent builds are safe: a stage is built in a scratch folder named by host and pid and
renamed into place, first writer wins (helpers.cache.cached_stage). The upstream stages
(problems, base models, rollouts) and each replicate's shared LoRA init are built here,
once, before any worker starts; the DPO reference log-probs are a cached stage too, so two
runs that need the same pass at once (dpo, dpo_samelr) at worst both compute it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .cache import stable_hash
from .profiles import Profile
from .progress import tqdm
from .replicates import replicate_ids, replicate_profile, replicate_run_names

WORKERS_ENV = "WSG_WORKERS"
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def worker_count() -> int:
    """Processes to train in: $WSG_WORKERS if set (1 = in this process), else min(cores, 2)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return max(1, min(os.cpu_count() or 1, 2))
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"${WORKERS_ENV} must be a whole number of processes >= 1, got {raw!r}")
    return int(raw)


def _single_thread() -> None:
    """Worker initialiser: one intra-op thread, and quiet (the parent draws the one progress line;
    a failed job's exception and traceback come back to it)."""
    os.environ.update(SINGLE_THREAD)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    import torch

    torch.set_num_threads(1)


def _executor(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """`workers` spawned single-thread processes (spawned: no fork of a process holding torch's threads)."""
    context = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_single_thread)


def _train_one(profile: Profile, name: str) -> dict[str, Any]:
    """Worker job: build one adapter stage; its folder and the job's wall and CPU seconds."""
    from .pipeline import adapter_stage, configure_environment

    wall, cpu = time.perf_counter(), time.process_time()
    configure_environment(profile)
    folder = adapter_stage(profile, name)
    return {"path": str(folder), "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def prepare_upstream(profiles: Sequence[Profile]) -> None:
    """Build what every run reads before workers start: upstream stages and each LoRA init (once, here)."""
    from .pipeline import lora_init_dir, rollouts_stage, student_dir
    from .train import make_lora_init

    for profile in profiles:
        rollouts_stage(profile)
        make_lora_init(profile, student_dir(profile), lora_init_dir(profile), profile.lora.init_seed)


def train_adapters(
    jobs: Sequence[tuple[Profile, str]], workers: int | None = None, labels: Sequence[str] | None = None
) -> list[Path]:
    """The adapter folder of each (profile, run name), training the missing ones first in `workers`
    single-thread processes (default `worker_count()`; 1 = here, in order). `labels` name the
    jobs on the progress line. A failed run stops the ones not yet started and raises its error."""
    from .pipeline import adapter_done, adapter_stage

    labels = list(labels) if labels is not None else [name for _, name in jobs]
    seen, missing = set(), []
    for (profile, name), label in zip(jobs, labels, strict=True):
        key = (stable_hash(profile.to_dict()), name)
        if key not in seen and not adapter_done(profile, name):
            missing.append((profile, name, label))
        seen.add(key)
    if missing:
        distinct = {stable_hash(p.to_dict()): p for p, _, _ in missing}
        prepare_upstream(list(distinct.values()))
        _run(missing, workers)
    return [adapter_stage(profile, name) for profile, name in jobs]


def _run(missing: list[tuple[Profile, str, str]], workers: int | None) -> None:
    run_calls([(_train_one, (profile, name), label) for profile, name, label in missing], workers)


def run_calls(calls: Sequence[tuple[Callable[..., Any], tuple, str]], workers: int | None = None) -> None:
    """Run each (function, args, label) once for the stages it builds (what it returns is dropped):
    `map_calls` with the progress line named "training"."""
    map_calls(calls, workers, "training")


def map_calls(
    calls: Sequence[tuple[Callable[..., Any], tuple, str]], workers: int | None = None, desc: str = "running"
) -> list[Any]:
    """What each (function, args, label) returns, in order, computed in `workers` spawned
    single-thread processes (default `worker_count()`; 1 = here, in order) with one progress line
    named `desc`. The functions must be importable (module level), their arguments and results
    picklable. `desc` is a verb ("training", "evaluating"). A failed call stops the ones not yet started and raises its error, named by its label."""
    if not calls:
        return []
    workers = min(workers or worker_count(), len(calls))
    plural = "es" if workers > 1 else ""
    bar = tqdm(total=len(calls), desc=f"{desc} ({workers} process{plural})", unit="job")
    if workers == 1:
        out = []
        for function, args, label in calls:
            bar.set_postfix_str(label)
            out.append(function(*args))
            bar.update()
        bar.close()
        return out
    with _executor(workers) as pool:
        futures = {pool.submit(function, *args): i for i, (function, args, _) in enumerate(calls)}
        results: dict[int, Any] = {}
        try:
            for future in concurrent.futures.as_completed(futures):
                label = calls[futures[future]][2]
                error = future.exception()
                if error is not None:
                    error.add_note(f"while {desc} {label} in a worker process")
                    raise error
                results[futures[future]] = future.result()
                bar.set_postfix_str(f"{label} done")
                bar.update()
        except BaseException:
            for future in futures:
                future.cancel()  # the calls not started; those running finish (their stages are kept)
            raise
        finally:
            bar.close()
    return [results[i] for i in range(len(calls))]


def replicate_adapters(profile: Profile, workers: int | None = None) -> list[dict[str, Path]]:
    """Every replicate's adapters (helpers.replicates.replicate_run_names), one dict per replicate,
    training all missing runs of all replicates concurrently."""
    jobs, labels, names = [], [], []
    for j in replicate_ids(profile):
        own = replicate_profile(profile, j)
        names.append(replicate_run_names(profile, j))
        jobs += [(own, name) for name in names[-1]]
        labels += [f"{name} (replicate {j})" for name in names[-1]]
    folders = iter(train_adapters(jobs, workers, labels))
    return [{name: next(folders) for name in run_names} for run_names in names]
