"""Chapter 08's measurements that cost model passes, each a cached stage: base samples and forward KL,
greedy accuracy, and the connectivity paths of the contrastive family.

Keys are the adapters' folders (content-keyed by their own stages) and the data and knobs
read, so a rerun of the chapter reads them back instead of running the model again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import pipeline
from .beyond import BEYOND_VERSION, Design, Runs
from .cache import atomic_write_json, cached_stage, read_json
from .deltas import load_deltas
from .profiles import Profile
from .replicates import replicate_profile

# --- function space: base samples and forward KL -----------------------------------


def _samples_inputs(profile: Profile, design: Design) -> dict[str, Any]:
    return {
        "v": BEYOND_VERSION,
        "base": pipeline._base_inputs(profile),
        "data": pipeline._data_inputs(profile),
        "files": pipeline.data_file_keys(profile),
        "prompts": design.kl_prompts,
        "k": design.kl_samples,
        "max_new_tokens": profile.rollouts.max_new_tokens,
        "seed": profile.seed,
    }


def base_samples(profile: Profile, design: Design) -> list[tuple[list[int], list[int]]]:
    """Completions sampled from the base on the first held-out prompts ((prompt ids, completion ids)).

    The same for every replicate: the base and the held-out prompts are shared.
    """

    def build(tmp: Path) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .evaluate import load_eval_set
        from .function_space import sample_base_completions
        from .rollouts import prompts_for

        student = pipeline.student_dir(profile)
        tokenizer = AutoTokenizer.from_pretrained(student)
        base = AutoModelForCausalLM.from_pretrained(student).to(pipeline.resolve_device(profile))
        # any adapter will do: samples are drawn with it switched off
        model = get_peft_model(base, LoraConfig(r=1, target_modules=list(profile.lora.targets)))
        prompts = prompts_for(load_eval_set(profile)[: design.kl_prompts], tokenizer)
        r = profile.rollouts
        seqs = sample_base_completions(
            model, tokenizer, prompts, design.kl_samples, r.max_new_tokens, r.batch_size, profile.seed
        )
        atomic_write_json(tmp / "samples.json", seqs)

    folder = cached_stage("kl_samples", _samples_inputs(profile, design), build, pipeline.run_root(profile))
    return [(list(p), list(c)) for p, c in read_json(folder / "samples.json")]


def forward_kls(profile: Profile, design: Design, runs: Mapping[str, Path]) -> dict[str, dict[str, float]]:
    """KL(base || run) on the base samples for each run: nats per completion and per token (cached)."""
    inputs = {"samples": _samples_inputs(profile, design), "runs": {n: str(p) for n, p in runs.items()}}

    def build(tmp: Path) -> None:
        from .function_space import forward_kl_by_adapter

        kls = forward_kl_by_adapter(
            pipeline.student_dir(profile),
            runs,
            base_samples(profile, design),
            batch_size=profile.analysis.eval_batch_size,
            device=pipeline.resolve_device(profile),
        )
        out = {n: {"per_completion": k.per_completion, "per_token": k.per_token} for n, k in kls.items()}
        atomic_write_json(tmp / "forward_kl.json", out)

    folder = cached_stage("forward_kl", inputs, build, pipeline.run_root(profile))
    return read_json(folder / "forward_kl.json")


# --- accuracy ----------------------------------------------------------------------


def _evaluate(profile: Profile, runs: Mapping[str, Path | None]) -> dict[str, float]:
    """Greedy held-out accuracy of runs (None: the base): chapter 06's cached model evaluations
    (helpers.eval_stages), the missing ones evaluated concurrently."""
    from .eval_stages import evaluate_models

    return {
        name: result["summary"]["accuracy"] for name, result in evaluate_models(profile, dict(runs)).items()
    }


def chapter06_accuracy(profile: Profile, runs: Mapping[str, Path], replicate: int = 0) -> dict[str, float]:
    """Chapter 06's accuracies in `replicate` of the runs whose adapter chapter 02 recorded at the same
    path there (and the base): the same adapter on the same held-out set needs no second pass."""
    from .results import load_results

    try:
        evaluation = load_results(profile.name, "06_evaluation")
        training = load_results(profile.name, "02_training")
        if replicate:
            evaluation = evaluation["per_replicate"][replicate]
            training = training["per_replicate"][replicate]
        accuracy = evaluation["evaluation"]["accuracy"]
        recorded = training["adapters"]
    except (FileNotFoundError, KeyError, IndexError):
        return {}
    same = {n for n, p in runs.items() if recorded.get(n) == str(p) and n in accuracy}
    return {n: float(accuracy[n]) for n in [*same, "base"] if n in accuracy}


def accuracies(profile: Profile, by_replicate: Sequence[Runs]) -> dict[int, dict[str, float]]:
    """Held-out greedy accuracy of every method of every replicate, and of the base ("base", shared).

    Every replicate reuses chapter 06's numbers where they are about the same adapters; the rest
    (the chapter's own runs) is evaluated here (cached).
    """
    base = chapter06_accuracy(profile, {}).get("base")
    if base is None:
        base = _evaluate(profile, {"base": None})["base"]
    out = {}
    for runs in by_replicate:
        rp = replicate_profile(profile, runs.replicate)
        methods = runs.methods()
        known = chapter06_accuracy(rp, methods, runs.replicate)
        missing = {n: p for n, p in methods.items() if n not in known}
        known |= _evaluate(rp, missing) if missing else {}
        out[runs.replicate] = {**known, "base": base}  # one base for every replicate: replicate 0's
    return out


# --- connectivity of the contrastive family ----------------------------------------

PATH_REFERENCES = ("sft", "dpo")  # each contrastive run is joined to both


def contrastive_paths(profile: Profile, design: Design, runs: Runs) -> dict[str, dict[str, Any]]:
    """Held-out losses along base + (1 - t) dW_a + t dW_b from each contrastive run to SFT and to DPO, and
    DPO to SFT for reference, with both barrier kinds on both measures (cached; empty without contrastive runs).
    """
    if not runs.contrastive:
        return {}
    rp = replicate_profile(profile, runs.replicate)
    pairs = [f"{c}-{ref}" for c in runs.contrastive for ref in PATH_REFERENCES] + ["dpo-sft"]
    adapters = {**runs.main, **runs.contrastive}
    used = {n: str(adapters[n]) for n in dict.fromkeys(n for p in pairs for n in p.split("-", 1))}
    a = profile.analysis
    inputs = {
        "v": BEYOND_VERSION,
        "runs": used,
        "pairs": pairs,
        "points": design.lmc_points,
        "problems": a.lmc_problems,
        "data": pipeline._data_inputs(rp),
        "files": pipeline.data_file_keys(rp),
        "base": pipeline._base_inputs(rp),
    }

    def build(tmp: Path) -> None:
        import numpy as np
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .claims import BARRIER_KINDS
        from .compare import MEASURES
        from .connectivity import barrier, path_losses
        from .evaluate import load_eval_set

        student = pipeline.student_dir(rp)
        tokenizer = AutoTokenizer.from_pretrained(student)
        model = AutoModelForCausalLM.from_pretrained(student).to(pipeline.resolve_device(rp)).eval()
        problems = load_eval_set(rp)[: a.lmc_problems]
        deltas = {n: load_deltas(p) for n, p in used.items()}
        ts = [float(t) for t in np.linspace(0.0, 1.0, design.lmc_points)]
        out = {}
        for pair in pairs:
            x, y = pair.split("-", 1)
            curve = path_losses(
                model,
                tokenizer,
                deltas[x],
                deltas[y],
                problems,
                ts,
                a.eval_batch_size,
                profile.model.max_length,
            )
            curve["barrier"] = {
                kind: {m: barrier(curve["ts"], curve[m], kind=kind) for m in MEASURES}
                for kind in BARRIER_KINDS
            }
            out[pair] = curve
        atomic_write_json(tmp / "paths.json", out)

    return read_json(cached_stage("contrastive_paths", inputs, build, pipeline.run_root(rp)) / "paths.json")


def forward_kls_by_replicate(
    profile: Profile, design: Design, by_replicate: Sequence[Runs]
) -> dict[int, dict[str, dict[str, float]]]:
    """forward_kls of every method (main and contrastive) of every replicate."""
    return {r.replicate: forward_kls(profile, design, r.methods()) for r in by_replicate}


def contrastive_block(
    profile: Profile, design: Design, by_replicate: Sequence[Runs], cosine: Mapping
) -> dict:
    """The contrastive family's record: which losses, in which replicates, their cosines and paths."""
    with_family = [r for r in by_replicate if r.contrastive]
    return {
        "methods": list(design.contrastive) if with_family else [],
        "replicates": [str(r.replicate) for r in with_family],
        "lr": profile.train.lr_for("dpo"),
        "cosine": dict(cosine),
        "paths": {str(r.replicate): contrastive_paths(profile, design, r) for r in with_family},
    }


def barrier_frame(paths: Mapping[str, Mapping[str, Any]]):
    """Both barrier kinds on both measures of every path, mean and sd over replicates."""
    import pandas as pd

    rows = [
        {"path": pair, "kind": kind, "measure": m, "replicate": j, "barrier": v}
        for j, table in paths.items()
        for pair, c in table.items()
        for kind, by in c["barrier"].items()
        for m, v in by.items()
    ]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).groupby(["path", "kind", "measure"])["barrier"].agg(["mean", "std", "count"])
    return frame.unstack("measure")
