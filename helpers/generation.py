"""Greedy generation for evaluation: HF `generate` everywhere, vLLM where it is installed and a GPU is.

HF `generate` (do_sample=False, left padding, stop at EOS) always works, on CPU or GPU.
vLLM is used when it is installed and CUDA is available and the model is given as a
folder (or a `vllm.LLM`): temperature 0, adapters through LoRARequest. Split from
helpers.evaluate (which grades and compares), which re-exports these names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .progress import tqdm

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
