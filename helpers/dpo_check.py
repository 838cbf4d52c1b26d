"""Does a DPO adapter measurably learn? Its held-out reward margin and its norm beside noise.

Two checks for issue 11.2, both cheap enough for a sweep:

- Held-out reward margin: on held-out problems the base gets wrong, the pair (gold worked
  solution, the base's own wrong greedy answer) is scored with DPO's implicit reward
  beta * (log pi/ref(chosen) - log pi/ref(rejected)); the base scores 0 by construction, so
  a mean margin whose interval excludes 0 means the adapter learned the preference on
  problems it never saw.
- Noise norm: AdamW normalises its steps, so an update fed pure noise still moves the
  weights. `noise_norm` runs the profile's optimiser and schedule on Gaussian gradients of
  the same LoRA factors; an update whose norm is not well above it is indistinguishable from
  a random walk.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .prompting import build_completion, build_prompt, tokenize_pair


class DpoCheckError(ValueError):
    """Bad input to a DPO check (names the argument at fault)."""


def heldout_pairs(
    problems: Sequence[Mapping[str, Any]], base_rows: Sequence[Mapping[str, Any]], tokenizer: Any = None
) -> list[dict[str, str]]:
    """(gold solution, base's wrong greedy completion) pairs of the problems the base got wrong.

    `base_rows` are the evaluation rows of the base (`evaluate_model(...)["rows"]`), in the
    order of `problems`; problems without a gold `solution` are skipped.
    """
    if len(problems) != len(base_rows):
        raise DpoCheckError(f"base_rows: {len(base_rows)} rows for {len(problems)} problems")
    pairs = []
    for problem, row in zip(problems, base_rows, strict=True):
        if row["correct"] or not problem.get("solution"):
            continue
        pairs.append(
            {
                "prompt": build_prompt(problem["question"], tokenizer),
                "chosen": build_completion(problem["solution"], tokenizer),
                "rejected": row["completion"],
            }
        )
    return pairs


def unused_pairs(records: Sequence[Mapping[str, Any]], train: Any) -> list[dict[str, str]]:
    """The rollout pairs DPO's cap leaves out: drawn exactly as training draws them (same seed and
    pairs per prompt), minus the first `train.dpo_max_pairs` that it trains on. With one pair per
    prompt they come from other prompts than the training pairs: held-out preference pairs of the
    very distribution DPO learns from. Empty when DPO trains on every pair."""
    from .method_data import dpo_pairs

    if not train.dpo_max_pairs:
        return []
    return dpo_pairs(list(records), train.seed, train.dpo_pairs_per_prompt, 0)[train.dpo_max_pairs :]


@torch.no_grad()
def _sequence_logps(
    model: Any, tokenizer: Any, texts: list[tuple[str, str]], max_length: int, batch_size: int = 32
) -> np.ndarray:
    """Summed log-prob of each completion given its prompt, `batch_size` sequences a forward pass.

    Rows are right-padded and the padding masked out of attention and of the sum, so a causal
    model gives each row the log-probs it gives it alone (up to float rounding).
    """
    rows = []
    for prompt, completion in texts:
        row = tokenize_pair(tokenizer, prompt, completion, max_length)
        if row["dropped"]:
            raise DpoCheckError(f"a prompt alone fills max_length={max_length}: {prompt[:60]!r}")
        rows.append(row)
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        attention = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width)
        for i, r in enumerate(chunk):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            attention[i, :n] = 1
            mask[i, :n] = torch.tensor(r["completion_mask"], dtype=torch.float)
        ids, attention = ids.to(model.device), attention.to(model.device)
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        out += (lp.cpu() * mask[:, 1:]).sum(-1).tolist()
    return np.array(out)


def reward_margins(
    base_dir: str | os.PathLike,
    adapter_dir: str | os.PathLike,
    pairs: Sequence[Mapping[str, str]],
    beta: float,
    max_length: int,
    ref: Mapping[str, Sequence[float]] | None = None,
) -> np.ndarray:
    """DPO's implicit reward margin of each pair: the adapter as policy, the bare base as reference.

    `ref`: the base's summed log-probs of the pairs ({"chosen", "rejected"}: `reference_logps`), when
    already computed for these pairs; otherwise they are computed here with the adapter off.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not pairs:
        raise DpoCheckError("pairs: no held-out pairs to score (the base answered every problem right?)")
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir)), str(adapter_dir))
    model.eval()
    scores = {}
    for side in ("chosen", "rejected"):
        texts = [(p["prompt"], p[side]) for p in pairs]
        policy = _sequence_logps(model, tokenizer, texts, max_length)
        if ref is None:
            with model.disable_adapter():
                base = _sequence_logps(model, tokenizer, texts, max_length)
        else:
            base = np.asarray(ref[side], dtype=float)
            if base.shape != policy.shape:
                raise DpoCheckError(f"ref[{side!r}]: {base.size} log-probs for {policy.size} pairs")
        scores[side] = policy - base
    return beta * (scores["chosen"] - scores["rejected"])


def reference_logps(
    base_dir: str | os.PathLike, pairs: Sequence[Mapping[str, str]], max_length: int
) -> dict[str, list[float]]:
    """The bare base's summed log-probs of each pair's chosen and rejected completion (the DPO
    reference side of `reward_margins`, computed once for pairs that several adapters are scored on)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir)).eval()
    return {
        side: _sequence_logps(model, tokenizer, [(p["prompt"], p[side]) for p in pairs], max_length).tolist()
        for side in ("chosen", "rejected")
    }


def margin_summary(margins: Sequence[float]) -> dict[str, float]:
    """Mean margin with a 95% t-interval, and the share of positive margins (the base: 0 and 0)."""
    from scipy import stats

    m = np.asarray(margins, dtype=float)
    if m.size < 2:
        raise DpoCheckError(f"margins: need at least 2 pairs for an interval, got {m.size}")
    half = stats.t.ppf(0.975, m.size - 1) * m.std(ddof=1) / math.sqrt(m.size)
    return {
        "pairs": int(m.size),
        "reward_margin": float(m.mean()),
        "margin_ci_low": float(m.mean() - half),
        "margin_ci_high": float(m.mean() + half),
        "reward_accuracy": float((m > 0).mean()),
    }


def noise_norm(
    lora_init: str | os.PathLike,
    lr: float,
    steps: int,
    total_steps: int,
    scheduler: str = "cosine",
    warmup_ratio: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> float:
    """||dW||_F over all modules after `steps` AdamW steps on Gaussian gradients of the LoRA factors.

    Starts from the shared LoRA initialisation (B = 0) with the profile's rate, schedule over
    `total_steps` and weight decay, as the trainer does; gradients are independent N(0, 1)
    (AdamW's step does not depend on their scale). The result is the norm a run reaches by
    a random walk alone, the floor a learned update must clear.
    """
    from transformers import get_scheduler

    from .deltas import load_deltas

    if not 0 < steps <= total_steps:
        raise DpoCheckError(f"steps must be in 1..total_steps={total_steps}, got {steps}")
    deltas = load_deltas(Path(lora_init))
    gen = torch.Generator().manual_seed(seed)
    params = []
    for d in deltas.values():
        params += [
            d.B.detach().clone().float().requires_grad_(),
            d.A.detach().clone().float().requires_grad_(),
        ]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = get_scheduler(scheduler, opt, math.ceil(warmup_ratio * total_steps), total_steps)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        sched.step()
    scales = [d.scale for d in deltas.values()]
    with torch.no_grad():
        squares = [
            (s * params[2 * i] @ params[2 * i + 1]).square().sum().item() for i, s in enumerate(scales)
        ]
    return math.sqrt(sum(squares))


def norms_beside_noise(
    adapters: Mapping[str, str | os.PathLike], names: Sequence[str], profile: Any
) -> dict[str, dict[str, float]]:
    """Each named run's update norm, the noise norm at its own rate, steps and init, and their ratio.

    Runs missing from `adapters` are left out. The rate, steps and LoRA init come from each
    run's train_meta.json; the schedule and weight decay from `profile.train`.
    """
    from .cache import read_json
    from .deltas import load_deltas
    from .geometry import global_norm

    t = profile.train
    out = {}
    for name in [n for n in names if n in adapters]:
        meta = read_json(Path(adapters[name]) / "train_meta.json")
        total = max(int(meta["steps"]), int(meta.get("result_step", meta["steps"])))
        noise = noise_norm(
            meta["init_dir"],
            float(meta["lr"]),
            int(meta.get("result_step", meta["steps"])),
            total,
            t.scheduler,
            t.warmup_ratio,
            t.weight_decay,
        )
        norm = global_norm(load_deltas(Path(adapters[name])))
        out[name] = {"lr": float(meta["lr"]), "norm": norm, "noise_norm": noise, "ratio": norm / noise}
    return out
