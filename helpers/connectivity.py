"""Linear mode connectivity: held-out loss along straight lines between LoRA updates.

The model's own weights are moved to base + sum_i w_i dW_i inside a context
manager and restored from saved copies afterwards, so the model is bit-identical
once the block exits (also after an error). Two held-out losses per point: the
study's per-token cross-entropy of the gold final answer right after the prompt,
and the per-token NLL of the full reference solution.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from helpers.deltas import LowRankDelta
from helpers.prompting import build_completion, build_prompt, tokenize_pair, uses_chat_template


class ConnectivityError(ValueError):
    """Deltas that do not fit the model, or inputs that cannot be scored."""


def answer_text(problem: Mapping[str, Any], tokenizer: Any) -> str:
    """The gold final answer as the model should write it: `\\boxed{N}` for chat models
    (the study's format), the GSM8K-style `#### N` for plain-text tokenizers."""
    answer = str(_field(problem, "answer")).strip()
    return f"\\boxed{{{answer}}}" if uses_chat_template(tokenizer) else f"#### {answer}"


def _field(problem: Mapping[str, Any], key: str) -> Any:
    if key not in problem or problem[key] in (None, ""):
        raise ConnectivityError(
            f"problem {problem.get('id', '?')!r} has no `{key}` (expected question, solution, answer)"
        )
    return problem[key]


def _weight(model: torch.nn.Module, name: str, delta: LowRankDelta) -> tuple[torch.nn.Parameter, bool]:
    """The weight a delta updates, and whether it is stored transposed (Conv1D)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        hint = " (pass the plain base model, not a PeftModel)" if hasattr(model, "peft_config") else ""
        raise ConnectivityError(f"the model has no module {name!r}{hint}") from None
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ConnectivityError(f"module {name!r} has no weight to update")
    if tuple(weight.shape) == delta.shape:
        return weight, False
    if type(module).__name__ == "Conv1D" and tuple(weight.shape) == delta.shape[::-1]:
        return weight, True
    raise ConnectivityError(f"module {name!r}: weight {tuple(weight.shape)} does not fit delta {delta.shape}")


@contextmanager
def merged(
    model: torch.nn.Module, terms: Sequence[tuple[Mapping[str, LowRankDelta], float]]
) -> Iterator[torch.nn.Module]:
    """Set each touched weight to W + sum_i w_i dW_i (summed in float64, rounded once) for the block.

    The original tensors are cloned first and copied back on exit, so the model is
    bit-identical afterwards. A term with weight 0 leaves W exactly as it is.
    """
    names = list(dict.fromkeys(name for deltas, _ in terms for name in deltas))
    targets = {name: _weight(model, name, next(d[name] for d, _ in terms if name in d)) for name in names}
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, (weight, transposed) in targets.items():
                parts = [
                    (deltas[name], float(w)) for deltas, w in terms if name in deltas and float(w) != 0.0
                ]
                saved[name] = weight.detach().clone()
                if not parts:
                    continue
                total = weight.detach().to(torch.float64)
                for delta, w in parts:
                    dense = delta.dense().to(device=weight.device, dtype=torch.float64)
                    total = total + w * (dense.T if transposed else dense)
                weight.copy_(total.to(weight.dtype))
        yield model
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                targets[name][0].copy_(original)


@contextmanager
def interpolate(
    model: torch.nn.Module, deltas: Mapping[str, LowRankDelta], weight: float
) -> Iterator[torch.nn.Module]:
    """The model at base + weight * dW for the block; restored exactly afterwards."""
    with merged(model, [(deltas, weight)]) as inside:
        yield inside


def encode_problems(
    tokenizer: Any, problems: Sequence[Mapping[str, Any]], max_length: int = 256
) -> dict[str, list[dict[str, list[int]]]]:
    """Token ids and scored-token masks for the two held-out losses.

    "answer": prompt + the final answer (answer_text), scoring only the answer's
    tokens (not the EOS tokenize_pair appends). "solution": prompt + the reference
    solution + EOS, scoring all completion tokens, as in training.
    """
    if len(problems) == 0:
        raise ConnectivityError("no held-out problems given")
    out: dict[str, list[dict[str, list[int]]]] = {"answer": [], "solution": []}
    for problem in problems:
        prompt = build_prompt(str(_field(problem, "question")), tokenizer)
        completion = build_completion(answer_text(problem, tokenizer), tokenizer)
        row = tokenize_pair(tokenizer, prompt, completion, max_length)
        if row["dropped"]:  # the prompt alone fills max_length: nothing of the answer could be scored
            continue
        n_answer = len(tokenizer(completion, add_special_tokens=False)["input_ids"])
        start = row["completion_mask"].index(1) if 1 in row["completion_mask"] else len(row["input_ids"])
        row["completion_mask"] = [
            1 if start <= i < start + n_answer else 0 for i in range(len(row["input_ids"]))
        ]
        out["answer"].append(row)
        solution = build_completion(str(_field(problem, "solution")), tokenizer)
        out["solution"].append(tokenize_pair(tokenizer, prompt, solution, max_length))
    return out


@torch.no_grad()
def mean_token_nll(
    model: torch.nn.Module, rows: Sequence[dict[str, list[int]]], batch_size: int = 16
) -> float:
    """Summed NLL of all scored tokens over their count (a per-token mean over the whole set)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            width = max(len(r["input_ids"]) for r in batch)
            ids = torch.tensor(
                [r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in batch], device=device
            )
            attention = torch.tensor(
                [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch]
            )
            scored = torch.tensor([r["completion_mask"] + [0] * (width - len(r["input_ids"])) for r in batch])
            logits = model(input_ids=ids, attention_mask=attention.to(device)).logits
            # token t is predicted from position t - 1; only the scored targets reach float32
            targets = scored[:, 1:].bool().to(device)
            picked = logits[:, :-1][targets].float()
            total += float(F.cross_entropy(picked, ids[:, 1:][targets], reduction="sum"))
            count += int(targets.sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ConnectivityError("no scored tokens: every completion was cut off (raise max_length)")
    return total / count


def heldout_losses(
    model: torch.nn.Module, encoded: Mapping[str, Sequence[dict[str, list[int]]]], batch_size: int = 16
) -> dict[str, float]:
    """answer_ce and solution_nll of the model as it is now."""
    return {
        "answer_ce": mean_token_nll(model, encoded["answer"], batch_size),
        "solution_nll": mean_token_nll(model, encoded["solution"], batch_size),
    }


def _curve(model, tokenizer, problems, ts, batch_size, max_length, terms_at, desc) -> dict[str, list[float]]:
    encoded = encode_problems(tokenizer, problems, max_length)
    result: dict[str, list[float]] = {"ts": [float(t) for t in ts], "answer_ce": [], "solution_nll": []}
    for t in tqdm(result["ts"], desc=desc, leave=False):
        with merged(model, terms_at(t)):
            losses = heldout_losses(model, encoded, batch_size)
        for key, value in losses.items():
            result[key].append(value)
    return result


def path_losses(
    model: torch.nn.Module,
    tokenizer: Any,
    deltas_a: Mapping[str, LowRankDelta],
    deltas_b: Mapping[str, LowRankDelta],
    problems: Sequence[Mapping[str, Any]],
    ts: Sequence[float],
    batch_size: int = 16,
    max_length: int = 256,
) -> dict[str, list[float]]:
    """Held-out losses along base + (1 - t) dW_a + t dW_b: keys ts, answer_ce, solution_nll.

    t = 0 is adapter a alone, t = 1 adapter b alone. `model` is the plain base model.
    """
    if set(deltas_a) != set(deltas_b):
        raise ConnectivityError("path_losses: the two adapters update different modules")
    return _curve(
        model,
        tokenizer,
        problems,
        ts,
        batch_size,
        max_length,
        lambda t: [(deltas_a, 1.0 - t), (deltas_b, t)],
        "path",
    )


def ray_losses(
    model: torch.nn.Module,
    tokenizer: Any,
    deltas: Mapping[str, LowRankDelta],
    problems: Sequence[Mapping[str, Any]],
    ts: Sequence[float],
    batch_size: int = 16,
    max_length: int = 256,
) -> dict[str, list[float]]:
    """Held-out losses along base + t dW (t = 0 is the base model, t = 1 the adapter)."""
    return _curve(model, tokenizer, problems, ts, batch_size, max_length, lambda t: [(deltas, t)], "ray")


BARRIER_KINDS = ("chord", "endpoint_mean")


def barrier(ts: Sequence[float], losses: Sequence[float], kind: str = "chord") -> float:
    """Loss barrier of a curve sampled at `ts` (sorted by t here, so any order is fine).

    kind="chord" (Entezari et al. 2022): the largest rise above the straight line between
    the endpoint losses, 0 if the curve never rises above it. kind="endpoint_mean"
    (Frankle et al. 2020): the largest loss on the path minus the mean of the endpoint
    losses. The endpoints are the smallest and largest t; every t must be distinct.
    """
    if kind not in BARRIER_KINDS:
        raise ConnectivityError(f"barrier: kind must be one of {', '.join(BARRIER_KINDS)}, got {kind!r}")
    t, y = np.asarray(ts, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if t.shape != y.shape or t.ndim != 1 or t.size < 2:
        raise ConnectivityError(
            f"barrier: need matching 1-d ts and losses of length >= 2, got {t.shape} and {y.shape}"
        )
    if not np.all(np.isfinite(t)):
        raise ConnectivityError(f"barrier: ts must be finite, got {t.tolist()}")
    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    if np.any(np.diff(t) == 0):
        raise ConnectivityError(f"barrier: ts must be distinct, got {sorted(t.tolist())}")
    if kind == "endpoint_mean":
        return float(np.max(y) - (y[0] + y[-1]) / 2)
    line = y[0] + (t - t[0]) / (t[-1] - t[0]) * (y[-1] - y[0])
    return float(max(np.max(y - line), 0.0))
