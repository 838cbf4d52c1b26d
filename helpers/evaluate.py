"""Greedy pass@1: grading, accuracy with a Wilson or exact interval, McNemar.

Generation (HF `generate` or vLLM) lives in helpers.generation and is re-exported here. Prompts always
come from helpers.prompting.build_prompt and grades from helpers.data.is_correct, so
evaluation sees the text that training saw and scores it as the rollouts were scored.
Extra held-out sets (`data.extra_eval_paths`, the study's AIME 2026) are scored the same
way and reported with exact (Clopper-Pearson) intervals, since they are small.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .cache import REPO_ROOT, atomic_write_json
from .data import graded_answer, is_correct, load_problems
from .generation import (  # noqa: F401 (re-exported: tests and benchmarks reach them through here)
    BACKENDS,
    VLLM_LORA_RANKS,
    EvaluationError,
    _generate_hf,
    _generate_vllm,
    _resolve_backend,
    _vllm_engine,
    generate,
    vllm_available,
)
from .prompting import build_prompt
from .stats import exact_interval, mcnemar, mcnemar_matrix, wilson_interval

__all__ = [
    "EvaluationError",
    "accuracy_table",
    "compare_methods",
    "evaluate_adapter",
    "evaluate_adapters",
    "evaluate_extra_sets",
    "evaluate_model",
    "extra_eval_path",
    "generate",
    "load_eval_set",
    "mcnemar",  # DESIGN.md's public API is helpers.evaluate.mcnemar
    "vllm_available",
]


def _check_problems(problems: Sequence[Mapping[str, Any]]) -> None:
    if not problems:
        raise EvaluationError("the evaluation set is empty")
    for i, problem in enumerate(problems):
        missing = [k for k in ("question", "answer") if not isinstance(problem.get(k), str)]
        if missing:
            raise EvaluationError(f"problem {i} (id {problem.get('id')!r}) lacks string field(s) {missing}")


def summarize(rows: Sequence[Mapping[str, Any]], alpha: float = 0.05) -> dict[str, Any]:
    """Accuracy of graded rows with its Wilson interval."""
    n = len(rows)
    correct = sum(bool(r["correct"]) for r in rows)
    low, high = wilson_interval(correct, n, alpha)
    return {"accuracy": correct / n if n else 0.0, "n": n, "correct": correct, "ci_low": low, "ci_high": high}


def grade_completions(problems: Sequence[Mapping[str, Any]], completions: Sequence[str]) -> dict[str, Any]:
    """Rows {id, question, reference, completion, extracted, correct} and their summary."""
    if len(problems) != len(completions):
        raise EvaluationError(f"{len(problems)} problems but {len(completions)} completions")
    rows = []
    for i, (problem, completion) in enumerate(zip(problems, completions, strict=True)):
        rows.append(
            {
                "id": str(problem.get("id", i)),
                "question": problem["question"],
                "reference": problem["answer"],
                "completion": completion,
                "extracted": graded_answer(completion, problem["answer"]),
                "correct": bool(is_correct(completion, problem["answer"])),
            }
        )
    return {"summary": summarize(rows), "rows": rows}


def evaluate_model(
    model: Any,
    tokenizer: Any,
    problems: Sequence[Mapping[str, Any]],
    max_new_tokens: int,
    batch_size: int,
    backend: str = "auto",
    **generate_kwargs: Any,
) -> dict[str, Any]:
    """Greedy pass@1 of a model on problems {id, question, answer}: {"summary", "rows"}."""
    _check_problems(problems)
    prompts = [build_prompt(p["question"], tokenizer) for p in problems]
    completions = generate(model, tokenizer, prompts, max_new_tokens, batch_size, backend, **generate_kwargs)
    result = grade_completions(problems, completions)
    result["config"] = {"max_new_tokens": max_new_tokens, "decoding": "greedy"}
    return result


def _load_base(base_dir: str | os.PathLike, device: str, dtype: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    return AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch_dtype).to(device)


def evaluate_adapters(
    base_dir: str | os.PathLike,
    adapter_dirs: Mapping[str, str | os.PathLike | None],
    problems: Sequence[Mapping[str, Any]],
    max_new_tokens: int,
    batch_size: int,
    backend: str = "auto",
    out_dir: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Evaluate several adapters of one base (None = the base itself), loading the base once.

    With `out_dir`, each result is written atomically to `<out_dir>/<name>.json`.
    """
    from transformers import AutoTokenizer

    _check_problems(problems)
    for name, adapter in adapter_dirs.items():
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            raise EvaluationError(
                f"adapter {name!r}: {adapter} has no adapter_config.json (not a PEFT adapter)"
            )
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    results: dict[str, dict[str, Any]] = {}
    if _resolve_backend(backend, str(base_dir)) == "vllm":
        prompts = [build_prompt(p["question"], tokenizer) for p in problems]
        longest = max(len(x) for x in tokenizer(prompts, add_special_tokens=False)["input_ids"])
        llm = _vllm_engine(base_dir, list(adapter_dirs.values()), longest + max_new_tokens, dtype)
        for i, (name, adapter) in enumerate(adapter_dirs.items(), start=1):
            results[name] = evaluate_model(
                llm,
                tokenizer,
                problems,
                max_new_tokens,
                batch_size,
                "vllm",
                lora_dir=adapter,
                lora_id=i,
                progress=progress,
            )
    else:
        from peft import PeftModel

        base = _load_base(base_dir, device, dtype)
        for name, adapter in adapter_dirs.items():
            model = base if adapter is None else PeftModel.from_pretrained(base, str(adapter))
            results[name] = evaluate_model(
                model,
                tokenizer,
                problems,
                max_new_tokens,
                batch_size,
                "hf",
                progress=progress,
                desc=f"evaluate {name}",
            )
            if adapter is not None:
                base = model.unload()  # remove the LoRA layers: the next adapter sees the bare base
    for name, adapter in adapter_dirs.items():
        results[name]["config"].update(
            base_dir=str(base_dir), adapter_dir=None if adapter is None else str(adapter)
        )
        if out_dir is not None:
            atomic_write_json(Path(out_dir) / f"{name}.json", results[name])
    return results


def evaluate_adapter(
    base_dir: str | os.PathLike,
    adapter_dir: str | os.PathLike | None,
    problems: Sequence[Mapping[str, Any]],
    max_new_tokens: int,
    batch_size: int,
    backend: str = "auto",
    out_path: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Load the base (plus a PEFT adapter unless None), evaluate, and save to `out_path` if given."""
    name = "adapter" if adapter_dir is not None else "base"
    result = evaluate_adapters(
        base_dir,
        {name: adapter_dir},
        problems,
        max_new_tokens,
        batch_size,
        backend,
        device=device,
        dtype=dtype,
        progress=progress,
    )[name]
    if out_path is not None:
        atomic_write_json(out_path, result)
    return result


def load_eval_set(
    profile: Any, source: str | None = None, path: str | None = None, n: int | None = None
) -> list[dict[str, str]]:
    """The held-out problems of a profile, or of another source (e.g. an AIME jsonl path).

    tiny/smoke: generated test-split problems (disjoint from training by construction);
    paper: the GSM8K test split (1,319). `source` as a .jsonl path reads question/answer
    pairs, where answers may be written `\\boxed{N}` (stored as `N`); `n=None` keeps them all.
    """
    data = profile.data
    if source is None:
        source, path, n = data.eval_source, path or data.eval_path, n or data.n_eval_problems
    problems = load_problems(
        source,
        split="test",
        n=n,
        path=path,
        seed=data.seed,
        min_steps=data.min_steps,
        max_steps=data.max_steps,
        max_result=data.max_result,
    )
    _check_problems(problems)
    return problems


def compare_methods(results: Mapping[str, Mapping[str, Any]], interval: str = "wilson") -> dict[str, Any]:
    """Accuracies and pairwise exact McNemar (raw and Holm) of evaluated methods.

    Rows are matched by problem id, so every method must have been graded on the same set.
    The output is the `evaluation` block helpers.findings reads: accuracy[method],
    ci[method] = [low, high] (95%, `interval` "wilson" or "exact" = Clopper-Pearson),
    mcnemar_p["a-b"], mcnemar_p_holm["a-b"], plus the full matrix (b/c counts) under
    `mcnemar` and each method's summary under `summary`.
    """
    if interval not in ("wilson", "exact"):
        raise EvaluationError(f"interval must be 'wilson' or 'exact', got {interval!r}")
    if len(results) < 2:
        raise EvaluationError(f"compare_methods needs at least two results, got {list(results)}")
    ids = None
    correct: dict[str, list[bool]] = {}
    for name, result in results.items():
        by_id = {r["id"]: bool(r["correct"]) for r in result["rows"]}
        if ids is None:
            ids = [r["id"] for r in result["rows"]]
        elif set(by_id) != set(ids):
            raise EvaluationError(f"{name!r} was graded on other problems than {next(iter(results))!r}")
        correct[name] = [by_id[i] for i in ids]
    matrix = mcnemar_matrix(correct)
    summaries = {m: dict(r["summary"]) for m, r in results.items()}
    return {
        "accuracy": {m: s["accuracy"] for m, s in summaries.items()},
        "ci": {m: _interval(s, interval) for m, s in summaries.items()},
        "interval": interval,
        "mcnemar_p": {f"{p['a']}-{p['b']}": p["p"] for p in matrix["pairs"]},
        "mcnemar_p_holm": {f"{p['a']}-{p['b']}": p["p_holm"] for p in matrix["pairs"]},
        "mcnemar": matrix,
        "summary": summaries,
    }


def _interval(summary: Mapping[str, Any], kind: str) -> list[float]:
    if kind == "exact":
        return list(exact_interval(summary["correct"], summary["n"]))
    return [summary["ci_low"], summary["ci_high"]]


def accuracy_table(evaluation: Mapping[str, Any]):
    """Accuracy, 95% interval, correct and n per model of a `compare_methods` block (a DataFrame)."""
    import pandas as pd

    summary = evaluation["summary"]
    label = "95% CI (exact)" if evaluation.get("interval") == "exact" else "95% CI (Wilson)"
    return pd.DataFrame(
        {
            "accuracy": evaluation["accuracy"],
            label: {m: f"[{lo:.3f}, {hi:.3f}]" for m, (lo, hi) in evaluation["ci"].items()},
            "correct": {m: s["correct"] for m, s in summary.items()},
            "n": {m: s["n"] for m, s in summary.items()},
        }
    ).round(3)


def extra_eval_path(path: str | os.PathLike) -> Path:
    """An extra evaluation set's file: absolute, or relative to the repository root; must exist."""
    resolved = Path(path).expanduser()
    resolved = resolved if resolved.is_absolute() else REPO_ROOT / resolved
    if not resolved.is_file():
        raise EvaluationError(f"data.extra_eval_paths: {path} does not exist (looked for {resolved})")
    return resolved


def evaluate_extra_sets(profile: Any, paths: Sequence[str | os.PathLike] | None = None) -> dict[str, Any]:
    """The base and every run of `profile` on each extra evaluation set (default: the profile's
    `data.extra_eval_paths`), keyed by file name: accuracy with exact intervals and McNemar.

    Each set is one cached evaluation stage keyed by the file's content, so an edited file is
    scored again and a renamed one is not.
    """
    from .pipeline import evaluation_stage

    paths = profile.data.extra_eval_paths if paths is None else paths
    reports: dict[str, Any] = {}
    for path in paths:
        resolved = extra_eval_path(path)
        name = resolved.stem if resolved.stem not in reports else f"{resolved.stem}-{len(reports)}"
        results = evaluation_stage(profile, source="jsonl", path=str(resolved))
        reports[name] = {**compare_methods(results, interval="exact"), "path": str(path)}
    return reports
