"""Linear mode connectivity: held-out loss along straight lines between LoRA updates.

The model's own weights are moved to base + sum_i w_i dW_i inside a context
manager and restored from saved copies afterwards, so the model is bit-identical
once the block exits (also after an error). Three held-out losses per point (MEASURES):

- "answer_ce": the study's per-token cross-entropy of the gold final answer right after
  the prompt. It asks a model that reasons first to answer without reasoning.
- "answer_ce_after_solution": the same answer tokens, scored after the gold worked solution
  (prompt + solution up to its final-answer marker, then the answer): the same question
  ("how sure is the model of the right answer?") asked where such a model gives its answer.
- "solution_nll": the per-token NLL of the whole reference solution (+ EOS), as in training.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from helpers.deltas import LowRankDelta
from helpers.prompting import build_completion, build_prompt, tokenize_pair, uses_chat_template

from .lmc_measures import (  # noqa: F401 (re-exported: import the measures and barrier from here)
    BARRIER_KINDS,
    CLAIM_MEASURE,
    MEASURE_LABELS,
    MEASURES,
    SATURATED_NATS,
    STUDY_MEASURE,
    ConnectivityError,
    barrier,
    claim_measure,
    measure_summary,
    no_barrier_reason,
)
from .logps import length_batches
from .progress import tqdm


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


# The markers a worked solution states its final answer with: GSM8K's `#### N` line, or `\\boxed{N}`.
ANSWER_MARKERS = ("####", "\\boxed{")


def reasoning_text(problem: Mapping[str, Any]) -> str:
    """The gold worked solution without its final answer: the text before the last `####`
    (GSM8K, the generated problems), else before the last `\\boxed{`, right-stripped."""
    solution = str(_field(problem, "solution"))
    for marker in ANSWER_MARKERS:
        cut = solution.rfind(marker)
        if cut >= 0:
            return solution[:cut].rstrip()
    raise ConnectivityError(
        f"problem {problem.get('id', '?')!r}: the solution states no final answer "
        f"(none of {', '.join(ANSWER_MARKERS)}), so the answer after it cannot be scored"
    )


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _answer_row(tokenizer: Any, prompt: str, before: str, answer: str, max_length: int) -> dict | None:
    """prompt + completion(`before` + `answer`), scoring only the answer's tokens (not EOS).

    The completion is tokenised whole, as in training; the answer's tokens are those after
    the longest common token prefix of the completion and of the completion without the
    answer (exactly the answer's own tokens when the tokenizer does not merge across the
    seam, else also the one merged token). With nothing `before`, every completion token but
    EOS is scored (the leading space a plain-text completion starts with included), as the
    study's measure always was. None when the answer does not fit in max_length.
    """
    completion = build_completion(before + answer, tokenizer)
    row = tokenize_pair(tokenizer, prompt, completion, max_length)
    if row["dropped"]:
        return None
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    first, stop = 0, len(ids)
    if before:
        head = tokenizer(completion[: len(completion) - len(answer)], add_special_tokens=False)["input_ids"]
        first = _common_prefix(ids, head)
    start = row["completion_mask"].index(1)
    if start + stop > len(row["input_ids"]):  # the completion was cut inside the answer
        return None
    row["completion_mask"] = [
        1 if start + first <= i < start + stop else 0 for i in range(len(row["input_ids"]))
    ]
    return row


def encode_problems(
    tokenizer: Any, problems: Sequence[Mapping[str, Any]], max_length: int = 256
) -> dict[str, list[dict[str, list[int]]]]:
    """Token ids and scored-token masks for the held-out losses, keyed by measure.

    "answer_ce": prompt + the final answer (answer_text), scoring only the answer's tokens.
    "answer_ce_after_solution": prompt + the gold reasoning (reasoning_text) + a newline +
    the same answer text, scoring only the answer's tokens. "solution_nll": prompt + the
    reference solution + EOS, scoring all completion tokens, as in training. A problem whose
    prompt fills max_length is left out of all three; one whose answer is cut off after its
    reasoning only out of "answer_ce_after_solution".
    """
    if len(problems) == 0:
        raise ConnectivityError("no held-out problems given")
    out: dict[str, list[dict[str, list[int]]]] = {m: [] for m in MEASURES}
    for problem in problems:
        prompt = build_prompt(str(_field(problem, "question")), tokenizer)
        answer = answer_text(problem, tokenizer)
        row = _answer_row(tokenizer, prompt, "", answer, max_length)
        if row is None:  # the prompt alone fills max_length: nothing of the answer could be scored
            continue
        out["answer_ce"].append(row)
        solution = tokenize_pair(
            tokenizer, prompt, build_completion(str(_field(problem, "solution")), tokenizer), max_length
        )
        out["solution_nll"].append(solution)
        reasoned = _answer_row(tokenizer, prompt, reasoning_text(problem) + "\n", answer, max_length)
        if reasoned is not None:  # the solution's own tokens when it ends in the answer
            out["answer_ce_after_solution"].append(reasoned)
    return out


@torch.no_grad()
def _mean_token_nlls(
    model: torch.nn.Module,
    rows: Sequence[dict[str, list[int]]],
    masks: Sequence[Sequence[list[int]]],
    batch_size: int = 16,
) -> list[float]:
    """Per-token mean NLL under each of several scored-token masks over the same token rows,
    from one forward pass per batch (masks[j][i] is mask j of row i). Rows go shortest first, in
    batches of at most batch_size rows (and on CPU at most CPU_BATCH_TOKENS padded tokens)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals, counts = [0.0] * len(masks), [0] * len(masks)
    budget = CPU_BATCH_TOKENS if device.type == "cpu" else None
    try:
        for index in length_batches([len(r["input_ids"]) for r in rows], batch_size, budget):
            batch = [rows[i] for i in index]
            width = max(len(r["input_ids"]) for r in batch)
            pad = [width - len(r["input_ids"]) for r in batch]
            ids = torch.tensor(
                [r["input_ids"] + [0] * n for r, n in zip(batch, pad, strict=True)], device=device
            )
            attention = torch.tensor(
                [[1] * len(r["input_ids"]) + [0] * n for r, n in zip(batch, pad, strict=True)]
            )
            scored = [
                torch.tensor([mask[i] + [0] * n for i, n in zip(index, pad, strict=True)])[:, 1:]
                .bool()
                .to(device)
                for mask in masks
            ]
            logits = model(input_ids=ids, attention_mask=attention.to(device), use_cache=False).logits
            # token t is predicted from position t - 1; only the scored targets reach float32
            union = torch.stack(scored).any(0)
            nll = F.cross_entropy(logits[:, :-1][union].float(), ids[:, 1:][union], reduction="none")
            for j, targets in enumerate(scored):
                totals[j] += float(nll[targets[union]].sum())
                counts[j] += int(targets.sum())
    finally:
        model.train(was_training)
    if 0 in counts:
        raise ConnectivityError("no scored tokens: every completion was cut off (raise max_length)")
    return [total / count for total, count in zip(totals, counts, strict=True)]


# On CPU a tiny model scores the same rows about 1.6x faster in batches of this many padded tokens
# (similar lengths, activations that stay in cache) than in one batch of 64 rows (measured on
# `tiny`, benchmarks/PROFILE.md); on GPU larger batches pay, and batch_size alone limits them.
CPU_BATCH_TOKENS = 2048


def mean_token_nll(
    model: torch.nn.Module, rows: Sequence[dict[str, list[int]]], batch_size: int = 16
) -> float:
    """Summed NLL of all scored tokens over their count (a per-token mean over the whole set)."""
    return _mean_token_nlls(model, rows, [[r["completion_mask"] for r in rows]], batch_size)[0]


def heldout_losses(
    model: torch.nn.Module, encoded: Mapping[str, Sequence[dict[str, list[int]]]], batch_size: int = 16
) -> dict[str, float]:
    """Every measure of MEASURES for the model as it is now (nats per scored token). Measures
    whose rows hold the same tokens (the answer after the solution and the solution, when the
    gold solution ends in the answer) share one forward pass."""
    groups: dict[tuple, list[str]] = {}
    for m in MEASURES:
        groups.setdefault(tuple(tuple(r["input_ids"]) for r in encoded[m]), []).append(m)
    out: dict[str, float] = {}
    for names in groups.values():
        masks = [[r["completion_mask"] for r in encoded[n]] for n in names]
        out.update(zip(names, _mean_token_nlls(model, encoded[names[0]], masks, batch_size), strict=True))
    return {m: out[m] for m in MEASURES}


def _curve(
    model, tokenizer, problems, ts, batch_size, max_length, terms_at, desc, scored=None
) -> dict[str, list[float]]:
    encoded = encode_problems(tokenizer, problems, max_length)
    result: dict[str, list[float]] = {"ts": [float(t) for t in ts], **{m: [] for m in MEASURES}}
    for t in tqdm(result["ts"], desc=desc, leave=False):
        terms = terms_at(t)
        # merged() skips zero weights, so the terms with a nonzero weight, in order, fix the weights
        # bit for bit: a path's end and the ray's end of the same update are one model, scored once
        state = tuple((id(deltas), float(w)) for deltas, w in terms if float(w) != 0.0)
        losses = scored.get(state) if scored is not None else None
        if losses is None:
            with merged(model, terms):
                losses = heldout_losses(model, encoded, batch_size)
            if scored is not None:
                scored[state] = losses
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
    scored: dict | None = None,
) -> dict[str, list[float]]:
    """Held-out losses along base + (1 - t) dW_a + t dW_b: keys ts and every measure of MEASURES.

    t = 0 is adapter a alone, t = 1 adapter b alone. `model` is the plain base model. `scored`, a
    dict shared by curves of one model, problems and sizes whose delta dicts stay alive, keeps the
    losses by model state, so a state two curves pass through (an update alone) is scored once.
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
        scored,
    )


def ray_losses(
    model: torch.nn.Module,
    tokenizer: Any,
    deltas: Mapping[str, LowRankDelta],
    problems: Sequence[Mapping[str, Any]],
    ts: Sequence[float],
    batch_size: int = 16,
    max_length: int = 256,
    scored: dict | None = None,
) -> dict[str, list[float]]:
    """Held-out losses along base + t dW (t = 0 is the base model, t = 1 the adapter); `scored` as
    in path_losses."""
    terms = lambda t: [(deltas, t)]  # noqa: E731
    return _curve(model, tokenizer, problems, ts, batch_size, max_length, terms, "ray", scored)
