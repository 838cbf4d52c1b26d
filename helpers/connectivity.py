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

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from helpers.deltas import LowRankDelta
from helpers.prompting import build_completion, build_prompt, tokenize_pair, uses_chat_template

from .progress import tqdm


class ConnectivityError(ValueError):
    """Deltas that do not fit the model, or inputs that cannot be scored."""


MEASURES = ("answer_ce", "answer_ce_after_solution", "solution_nll")
MEASURE_LABELS = {
    "answer_ce": "answer CE right after the prompt (nats/token)",
    "answer_ce_after_solution": "answer CE after the gold solution (nats/token)",
    "solution_nll": "solution NLL (nats/token)",
}
STUDY_MEASURE = "answer_ce"
# The measure the claims' barriers are read on for the tiny models (chapter 07 passes it to
# findings.connectivity_block; `claim_measure` picks per profile). Measured on `tiny` (seed 42,
# 64 held-out problems, 11 points per path, 11 paths):
# - answer_ce, the study's, is off-distribution: 11.0 nats/token on the base and 8.85-11.3 on
#   the adapters, worse than uniform over 512 tokens (6.24). A tiny model never writes `#### N`
#   right after "Answer:". Its "barriers" (0.30-0.31 on every path from SFT/RFT/RIFT to DFT,
#   GRPO or DPO) are the shape of SFT's own ray near the base (11.03 -> 11.08 -> ... 9.27),
#   retraced by any path to an update that barely moves this measure: not a separation.
# - answer_ce_after_solution is saturated: 0.0006-0.006 on every model and point, because the
#   answer is the number the solution's last line computed and every tiny model copies it. A
#   barrier test on it cannot find anything, so it cannot carry a claim here; on models whose
#   answer does not follow from the last line it is the study's question asked in the right place.
# - solution_nll is on-distribution and separates the methods (0.013 for DFT to 0.16 for SFT):
#   the claims use it, with the chord barrier (see `no_barrier_reason` for why it shows none).
CLAIM_MEASURE = "solution_nll"
# Below this many nats/token on every endpoint a measure is saturated (nothing to rise from).
SATURATED_NATS = 0.01


def claim_measure(profile: Any) -> str:
    """The measure the claims use on a profile: the study's own (answer CE right after the prompt)
    on the study's chat models, CLAIM_MEASURE on the tiny models, where the study's measure is
    off-distribution and the answer after the solution saturated (see the notes on CLAIM_MEASURE)."""
    return CLAIM_MEASURE if profile.model.student == "tiny" else STUDY_MEASURE


def no_barrier_reason() -> str:
    """Why the solution NLL shows no barrier on any path at tiny scale (measured on `tiny`)."""
    return (
        "The student was pretrained by NLL on worked solutions from the same generator, so the base "
        "sits close to a minimum of the solution NLL (0.022 nats/token; the best adapter, DFT, reaches "
        "0.013) and every LoRA update is a small move inside that one basin. Near a minimum the loss is "
        "convex along any straight line, and a convex curve never rises above its chord; the mix of two "
        "updates that are not colinear is also shorter than either (|(a + b)/2| < (|a| + |b|)/2), so it "
        "lies nearer the base, where the loss is lower. On `tiny` every interior point of all 11 paths "
        "lies below the chord (largest rise -0.0002 nats/token, SFT-RFT), and even SFT's reruns meet "
        "lower in the middle (SFT-SFT seed: 0.147 against 0.156 and 0.158 at the ends). The "
        "endpoint-mean barrier of this measure is then half the endpoints' gap (0.07 on SFT-GRPO, "
        "(0.156 - 0.016) / 2), not a barrier: the claims read the chord barrier on it."
    )


def measure_summary(lmc: Mapping[str, Any], vocab_size: int) -> dict[str, dict[str, float | bool]]:
    """Per measure of a connectivity report (compare.connectivity_report): the base's value (t = 0
    of the rays), the range over the adapters (t = 1), log V, whether the base is worse than
    uniform (off-distribution), whether every endpoint is below SATURATED_NATS (saturated), and
    the largest chord barrier over the paths. Chapter 04 can state its choice of measure from it."""
    rays, paths = lmc["rays"], lmc["paths"]
    if not rays or not paths:
        raise ConnectivityError("measure_summary: the report needs rays (for the base) and paths")
    out: dict[str, dict[str, float | bool]] = {}
    for measure in [m for m in MEASURES if all(m in c for c in (*rays.values(), *paths.values()))]:
        base = float(next(iter(rays.values()))[measure][0])
        adapters = [float(c[measure][-1]) for c in rays.values()]
        ends = adapters + [float(c[measure][i]) for c in paths.values() for i in (0, -1)]
        out[measure] = {
            "base": base,
            "adapters_min": min(adapters),
            "adapters_max": max(adapters),
            "log_vocab": math.log(vocab_size),
            "off_distribution": base > math.log(vocab_size),
            "saturated": max(ends) < SATURATED_NATS,
            "largest_chord_barrier": max(barrier(c["ts"], c[measure]) for c in paths.values()),
        }
    return out


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
        for index in _length_batches([len(r["input_ids"]) for r in rows], batch_size, budget):
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


def _length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Row indices shortest first (ties in order), cut into batches of at most batch_size rows and,
    with max_tokens, at most max_tokens padded tokens (a longer row goes alone)."""
    batches: list[list[int]] = [[]]
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        grown = len(batches[-1]) + 1
        if batches[-1] and (
            grown > batch_size or (max_tokens is not None and grown * lengths[i] > max_tokens)
        ):
            batches.append([])
        batches[-1].append(i)
    return batches if batches[0] else []


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
