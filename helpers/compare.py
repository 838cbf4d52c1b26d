"""Run the model-level comparisons over many trained runs: loss paths and CKA per layer.

Both load the base model once and move its weights to base + dW (exactly restored
afterwards) instead of loading a PEFT model per run, so a chapter costs one model load.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .cka import cka_by_layer, hidden_states
from .claims import BARRIER_KINDS, BARRIER_MARGIN, CONTROL_PATHS
from .connectivity import MEASURES, barrier, merged, path_losses, ray_losses
from .deltas import LowRankDelta
from .progress import tqdm

Deltas = Mapping[str, LowRankDelta]


def present_pairs(pairs: Sequence[str], runs: Sequence[str]) -> list[str]:
    """The "a-b" pairs whose two runs exist in this profile (a profile may train fewer runs)."""
    return [p for p in pairs if all(name in runs for name in p.split("-", 1))]


def connectivity_report(
    model: Any,
    tokenizer: Any,
    deltas: Mapping[str, Deltas],
    pairs: Sequence[str],
    problems: Sequence[Mapping[str, Any]],
    points: int,
    batch_size: int = 16,
    max_length: int = 256,
    base: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Loss along base + (1 - t) dW_a + t dW_b for each pair, base + t dW for each run, and barriers.

    Every measure of connectivity.MEASURES is on every curve; `barrier[measure][pair]` is its
    chord barrier (rise above the line between the endpoint losses),
    `barrier_endpoint_mean[measure][pair]` the largest loss minus the endpoints' mean. `base`: the
    base model's losses on these problems and sizes, if already scored (the rays' t = 0).
    """
    ts = list(np.linspace(0.0, 1.0, points))
    # the losses of every model state scored so far (the base, each update alone): scored once
    scored = {} if base is None else {(): dict(base)}
    paths = {}
    for pair in tqdm(pairs, desc="paths"):
        a, b = pair.split("-", 1)
        paths[pair] = path_losses(
            model, tokenizer, deltas[a], deltas[b], problems, ts, batch_size, max_length, scored
        )
    rays = {
        name: ray_losses(model, tokenizer, d, problems, ts, batch_size, max_length, scored)
        for name, d in tqdm(deltas.items(), desc="rays")
    }
    out = {"ts": ts, "paths": paths, "rays": rays}
    for kind in BARRIER_KINDS:
        out["barrier" if kind == "chord" else f"barrier_{kind}"] = {
            measure: {pair: barrier(curve["ts"], curve[measure], kind=kind) for pair, curve in paths.items()}
            for measure in MEASURES
        }
    return out


def barrier_frame(
    lmc: Mapping[str, Any], controls: Sequence[str] = CONTROL_PATHS, margin: float = BARRIER_MARGIN
):
    """Endpoints and both barrier kinds of every path on every measure it holds, and per column
    the threshold a barrier must clear to count (the largest control-path barrier + margin)."""
    import pandas as pd

    columns = {}
    for measure in [m for m in MEASURES if m in lmc["barrier"]]:
        columns[f"{measure} at a"] = {p: c[measure][0] for p, c in lmc["paths"].items()}
        columns[f"{measure} at b"] = {p: c[measure][-1] for p, c in lmc["paths"].items()}
        for kind in BARRIER_KINDS:
            key = "barrier" if kind == "chord" else f"barrier_{kind}"
            columns[f"{kind} barrier ({measure})"] = lmc[key][measure]
    table = pd.DataFrame(columns)
    present = [p for p in controls if p in table.index]
    limit = {c: (table.loc[present, c].max() if present else 0.0) + margin for c in table if "barrier" in c}
    table.loc["a barrier must exceed"] = pd.Series(limit)
    return table


def representations(
    model: Any,
    tokenizer: Any,
    deltas: Mapping[str, Deltas],
    prompts: Sequence[str],
    batch_size: int = 16,
    pool: str = "mean",
    base: list[np.ndarray] | None = None,
) -> dict[str, list[np.ndarray]]:
    """Pooled hidden states per layer of the base model (`base`, if already computed) and of
    base + dW for every run."""
    states = {
        "base": base if base is not None else hidden_states(model, tokenizer, prompts, batch_size, pool)
    }
    for name, d in tqdm(deltas.items(), desc="hidden states"):
        with merged(model, [(d, 1.0)]):
            states[name] = hidden_states(model, tokenizer, prompts, batch_size, pool)
    return states


def cka_report(states: Mapping[str, list[np.ndarray]], pairs: Sequence[str]) -> dict[str, Any]:
    """Linear and debiased CKA per layer for each "a-b" pair of models (base included)."""
    out: dict[str, Any] = {"linear": {}, "debiased": {}}
    for pair in pairs:
        a, b = pair.split("-", 1)
        out["linear"][pair] = cka_by_layer(states[a], states[b])
        out["debiased"][pair] = cka_by_layer(states[a], states[b], debiased=True)
    return out


def _replicate_connectivity_copy(frozen: bytes, *args: Any) -> dict[str, Any]:
    """`_replicate_connectivity` on a private copy of the (pickled) model and tokenizer: a worker
    job. Sent as bytes on purpose: a tensor passed to a process pool goes through torch's shared
    memory, so the workers would move one another's weights (and the parent's) to base + dW."""
    model, tokenizer = pickle.loads(frozen)
    return _replicate_connectivity(model, tokenizer, *args)


def _replicate_connectivity(
    model: Any,
    tokenizer: Any,
    replicate: Mapping[str, Any],
    pairs: Sequence[str],
    problems: Sequence[Mapping[str, Any]],
    sizes: tuple[int, int, int],
    base: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """`connectivity_report` of one replicate ({run: adapter folder}): the paths of `pairs` whose
    runs it trained, and its rays (a module-level function, so a worker process can run it)."""
    from .runs import load_all_deltas

    deltas = load_all_deltas(replicate)
    present = present_pairs(pairs, list(replicate))
    return connectivity_report(model, tokenizer, deltas, present, problems, *sizes, base)


def _base_losses(report: Mapping[str, Any]) -> dict[str, float] | None:
    """The base model's losses (every ray's t = 0), to reuse in the next replicate."""
    rays = report["rays"]
    first = next(iter(rays.values()), None)
    return {m: first[m][0] for m in MEASURES} if first and first["ts"][0] == 0.0 else None


def connectivity_reports(
    model: Any,
    tokenizer: Any,
    runs: Sequence[Mapping[str, Any]],
    pairs: Sequence[str],
    problems: Sequence[Mapping[str, Any]],
    points: int,
    batch_size: int = 16,
    max_length: int = 256,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """`connectivity_report` within each replicate ({run: adapter folder} per replicate): the
    paths of `pairs` whose runs the replicate trained, and its rays.

    With `workers` > 1 (default `parallel.worker_count()`), one spawned single-thread process per
    replicate (the model is sent to each); the numbers equal a one-thread run here bit for bit.
    With 1, here, one replicate after another, the base model scored once for all of them.
    """
    from .parallel import map_calls, worker_count

    sizes = (points, batch_size, max_length)
    workers = min(workers or worker_count(), len(runs)) if runs else 1
    if workers > 1:
        frozen = pickle.dumps((model, tokenizer))
        job = _replicate_connectivity_copy
        calls = [
            (job, (frozen, replicate, pairs, problems, sizes), f"replicate {j}")
            for j, replicate in enumerate(runs)
        ]
        return map_calls(calls, workers, "scoring paths of")
    reports, base = [], None
    for replicate in runs:
        reports.append(_replicate_connectivity(model, tokenizer, replicate, pairs, problems, sizes, base))
        # the base model is the same in every replicate: scored once (every ray starts at t = 0)
        base = base or _base_losses(reports[-1])
    return reports


def cka_pairs(names: Sequence[str], ref: str = "sft", extra: Sequence[str] = ()) -> list[str]:
    """The model pairs chapter 05 compares: the base to every run, `ref` to every other run, and
    the `extra` pairs whose runs exist."""
    pairs = [f"base-{n}" for n in names] + [f"{ref}-{n}" for n in names if n != ref]
    return pairs + present_pairs(extra, names)


def cka_reports(
    model: Any,
    tokenizer: Any,
    runs: Sequence[Mapping[str, Any]],
    prompts: Sequence[str],
    batch_size: int = 16,
    pool: str = "mean",
    extra: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """`cka_report` within each replicate on the pairs of `cka_pairs`; the base model's hidden
    states are computed once and shared (they do not depend on the replicate)."""
    from .runs import load_all_deltas

    base = hidden_states(model, tokenizer, prompts, batch_size, pool)
    reports = []
    for replicate in runs:
        states = representations(
            model, tokenizer, load_all_deltas(replicate), prompts, batch_size, pool, base
        )
        reports.append(cka_report(states, cka_pairs(list(replicate), extra=extra)))
    return reports
