"""Greedy pass@1: batched generation, grading, accuracy with a Wilson or exact interval, McNemar.

HF `generate` (do_sample=False, left padding, stop at EOS) always works, on CPU or GPU.
vLLM is used when it is installed and CUDA is available and the model is given as a
folder (or a `vllm.LLM`): temperature 0, adapters through LoRARequest. Prompts always
come from helpers.prompting.build_prompt and grades from helpers.data.is_correct, so
evaluation sees the text that training saw and scores it as the rollouts were scored.
Extra held-out sets (`data.extra_eval_paths`, the study's AIME 2026) are scored the same
way and reported with exact (Clopper-Pearson) intervals, since they are small.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .cache import REPO_ROOT, atomic_write_json
from .data import graded_answer, is_correct, load_problems
from .progress import tqdm
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

BACKENDS = ("auto", "hf", "vllm")
# vLLM preallocates LoRA slots of one of these ranks; an adapter's r is rounded up to one.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class EvaluationError(ValueError):
    """An evaluation that cannot run as asked; the message names the input at fault."""


def vllm_available() -> bool:
    """True when `import vllm` works and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import vllm  # noqa: F401
    except Exception:  # an install broken in any way means "use HF", never a crash
        return False
    return True


def _resolve_backend(backend: str, model: Any) -> str:
    """Pick the backend: an in-memory torch model can only go through HF generate."""
    if backend not in BACKENDS:
        raise EvaluationError(f"backend must be one of {BACKENDS}, got {backend!r}")
    in_memory = isinstance(model, torch.nn.Module)
    if backend == "vllm":
        if in_memory:
            raise EvaluationError("backend='vllm' needs a model folder or a vllm.LLM, not a torch module")
        if not vllm_available():
            raise EvaluationError("backend='vllm' needs `import vllm` to work and a CUDA device")
        return "vllm"
    if backend == "hf" or in_memory:
        return "hf"
    return "vllm" if vllm_available() else "hf"


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS and the model's (chat models list several)."""
    ids: list[int] = []
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, config_eos):
        for i in value if isinstance(value, list | tuple) else [value]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise EvaluationError("the tokenizer has no eos_token: generation would never stop")
    return ids


@torch.no_grad()
def _generate_hf(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    progress: bool,
    desc: str,
) -> list[str]:
    """Greedy HF generation, longest prompts first (less padding, and memory fails early)."""
    from transformers import GenerationConfig

    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    # An explicit config, so a hub model's sampling defaults (temperature, top_p) never leak in.
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad
    )
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    out: list[str] = [""] * len(prompts)
    side, was_training = tokenizer.padding_side, model.training
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    model.eval()
    try:
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc=desc, disable=not progress, leave=True, unit="batch"):
            index = order[start : start + batch_size]
            enc = tokenizer(
                [prompts[i] for i in index], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            sequences = model.generate(**enc, generation_config=config)
            for i, row in zip(index, sequences[:, enc["input_ids"].shape[1] :].tolist(), strict=True):
                stop = next((t for t, tok in enumerate(row) if tok in eos), len(row))
                out[i] = tokenizer.decode(row[:stop], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def _vllm_rank(adapter_dirs: Sequence[str | os.PathLike]) -> int:
    """The LoRA slot rank vLLM must reserve for these adapters."""
    ranks = [int(json.loads((Path(d) / "adapter_config.json").read_text())["r"]) for d in adapter_dirs]
    need = max(ranks, default=8)
    return next((r for r in VLLM_LORA_RANKS if r >= need), need)


def _vllm_engine(
    model_dir: str | os.PathLike, adapter_dirs: Sequence[Any], max_len: int, dtype: str = "auto"
):
    """A vLLM engine for one base; the context is capped at what evaluation needs, so the
    KV cache is not sized for the model's full context (262k tokens for Qwen3-4B-2507)."""
    from vllm import LLM

    adapters = [a for a in adapter_dirs if a is not None]
    lora = {"enable_lora": True, "max_lora_rank": _vllm_rank(adapters)} if adapters else {}
    return LLM(model=str(model_dir), dtype=dtype, seed=0, max_model_len=max_len, **lora)


def _generate_vllm(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    lora_dir: str | os.PathLike | None,
    lora_id: int,
    progress: bool,
) -> list[str]:
    """Greedy vLLM generation on our own token ids (the same tokens HF would see)."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    llm = model
    if not isinstance(llm, LLM):
        llm = _vllm_engine(model, [lora_dir], max(map(len, ids)) + max_new_tokens)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, skip_special_tokens=True)
    request = LoRARequest(f"adapter-{lora_id}", lora_id, str(lora_dir)) if lora_dir else None
    outputs = llm.generate(
        [{"prompt_token_ids": x} for x in ids], params, lora_request=request, use_tqdm=progress
    )
    return [o.outputs[0].text for o in outputs]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    backend: str = "auto",
    *,
    lora_dir: str | os.PathLike | None = None,
    lora_id: int = 1,
    progress: bool = True,
    desc: str = "generate",
) -> list[str]:
    """Greedy completions of `prompts` (text after the prompt, cut at the first EOS).

    `model` is a HF causal LM (or PeftModel) for the HF backend, or a model folder /
    `vllm.LLM` for vLLM, where `lora_dir` names the adapter to apply.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise EvaluationError(
            f"max_new_tokens and batch_size must be positive, got {max_new_tokens}, {batch_size}"
        )
    if isinstance(prompts, str):
        raise EvaluationError("`prompts` must be a list of strings, not one string")
    if not prompts:
        return []
    if _resolve_backend(backend, model) == "vllm":
        return _generate_vllm(model, tokenizer, prompts, max_new_tokens, lora_dir, lora_id, progress)
    if not isinstance(model, torch.nn.Module):
        raise EvaluationError(f"the HF backend needs a loaded model, got {type(model).__name__}")
    if lora_dir is not None:
        raise EvaluationError("the HF backend takes the adapter inside the model (PeftModel), not `lora_dir`")
    return _generate_hf(model, tokenizer, prompts, max_new_tokens, batch_size, progress, desc)


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
