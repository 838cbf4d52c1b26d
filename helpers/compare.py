"""Run the model-level comparisons over many trained runs: loss paths and CKA per layer.

Both load the base model once and move its weights to base + dW (exactly restored
afterwards) instead of loading a PEFT model per run, so a chapter costs one model load.
"""

from __future__ import annotations

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


def connectivity_reports(
    model: Any,
    tokenizer: Any,
    runs: Sequence[Mapping[str, Any]],
    pairs: Sequence[str],
    problems: Sequence[Mapping[str, Any]],
    points: int,
    batch_size: int = 16,
    max_length: int = 256,
) -> list[dict[str, Any]]:
    """`connectivity_report` within each replicate ({run: adapter folder} per replicate): the
    paths of `pairs` whose runs the replicate trained, and its rays. One replicate's updates
    are loaded at a time."""
    from .runs import load_all_deltas

    reports, base = [], None
    for replicate in runs:
        deltas = load_all_deltas(replicate)
        present = present_pairs(pairs, list(replicate))
        sizes = (points, batch_size, max_length)
        reports.append(connectivity_report(model, tokenizer, deltas, present, problems, *sizes, base))
        # the base model is the same in every replicate: scored once (every ray starts at t = 0)
        rays = reports[-1]["rays"]
        if base is None and rays:
            first = next(iter(rays.values()))
            base = {m: first[m][0] for m in MEASURES} if first["ts"][0] == 0.0 else None
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
