"""Function space beside weight space: how far an adapter moves the model's predictions from the base.

The measure is RL's Razor's (Shenfeld, Pari & Agrawal 2025, arXiv 2509.04259), found there to
predict forgetting: the forward KL from the base policy pi_0 to the fine-tuned pi on the new
task's prompts, E_x KL(pi_0(.|x) || pi(.|x)), an expectation over completions y ~ pi_0.
We estimate it on held-out prompts from completions sampled from the base model at
temperature 1 (draws from pi_0 itself) through the chain rule,

    KL(pi_0(.|x) || pi(.|x)) = E_{y ~ pi_0} sum_t KL(pi_0(.|x, y<t) || pi(.|x, y<t)),

with the exact KL over the vocabulary at every completion position (the Rao-Blackwellised
estimate: unbiased, never negative, and less noisy than the log-ratio of the sampled tokens).
Gold solutions or the trained model's own samples would measure a different expectation.
One model is loaded: peft's `disable_adapter` gives the base.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .progress import tqdm

Sequences = Sequence[tuple[list[int], list[int]]]  # (prompt token ids, completion token ids)


class FunctionSpaceError(ValueError):
    """Inputs the KL measure cannot use (no completion tokens, a model that is no PEFT model, ...)."""


@dataclass(frozen=True)
class ForwardKL:
    """KL(base || adapted) per completion (nats, summed over its tokens) and the completions' token counts."""

    per_sequence: list[float]
    tokens: list[int]

    @property
    def per_completion(self) -> float:
        """Mean over completions of the sequence-level KL: RL's Razor's quantity (nats per completion)."""
        return sum(self.per_sequence) / len(self.per_sequence)

    @property
    def per_token(self) -> float:
        """Total KL over total completion tokens (nats per token; comparable across lengths)."""
        return sum(self.per_sequence) / max(1, sum(self.tokens))

    def to_dict(self) -> dict[str, Any]:
        """Summary and per-completion values, for save_results."""
        return {"per_completion": self.per_completion, "per_token": self.per_token, **asdict(self)}


def token_kl(base_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(base_logits) || softmax(logits)) over the last axis, in float32."""
    base_logp = torch.log_softmax(base_logits.float(), dim=-1)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (base_logp.exp() * (base_logp - logp)).sum(dim=-1)


def _pad(sequences: Sequences, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask, and `scored` (B, T-1): 1 where position t predicts a completion token."""
    width = max(len(p) + len(c) for p, c in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    scored = torch.zeros((len(sequences), width - 1), dtype=torch.bool)
    for i, (prompt, completion) in enumerate(sequences):
        n = len(prompt) + len(completion)
        input_ids[i, :n] = torch.tensor(prompt + completion)
        attention_mask[i, :n] = 1
        scored[i, len(prompt) - 1 : n - 1] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "scored": scored}


def _hidden(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's last hidden states at the scored positions, (N, hidden)."""
    decoder = model.get_base_model().get_decoder()
    out = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return out.last_hidden_state[:, :-1][batch["scored"]]


@torch.no_grad()
def forward_kl(
    model: Any,
    sequences: Sequences,
    pad_token_id: int,
    batch_size: int = 8,
    chunk_tokens: int = 2048,
    desc: str = "KL(base || adapter)",
) -> ForwardKL:
    """KL(base || adapted) summed over each completion, for (prompt ids, completion ids) drawn from the base.

    `model` is a peft model; its adapter is switched off for the base. The LM head runs on
    `chunk_tokens` positions at a time, so no (B, T, vocab) tensor is formed.
    """
    if not hasattr(model, "disable_adapter") or not hasattr(model, "get_base_model"):
        raise FunctionSpaceError(
            f"forward_kl needs a peft model (adapter on/off); got {type(model).__name__}"
        )
    if getattr(model.config, "final_logit_softcapping", None):
        raise FunctionSpaceError(
            "forward_kl applies the LM head directly; models with logit soft-capping differ"
        )
    empty = [i for i, (p, c) in enumerate(sequences) if not p or not c]
    if not sequences or empty:
        raise FunctionSpaceError(
            f"every sequence needs prompt and completion tokens; empty at rows {empty[:5]}"
        )
    head = model.get_base_model().get_output_embeddings()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_sequence: list[float] = []
    for start in tqdm(range(0, len(sequences), batch_size), desc=desc, leave=False):
        batch = {
            k: v.to(device) for k, v in _pad(sequences[start : start + batch_size], pad_token_id).items()
        }
        hidden = _hidden(model, batch)
        with model.disable_adapter():
            base_hidden = _hidden(model, batch)
        kl = torch.empty(hidden.shape[0], device=device)
        for i in range(0, hidden.shape[0], chunk_tokens):
            part = slice(i, i + chunk_tokens)
            with model.disable_adapter():  # the head too, should an adapter ever target it
                base_logits = head(base_hidden[part])
            kl[part] = token_kl(base_logits, head(hidden[part]))
        row = batch["scored"].nonzero()[:, 0]  # the row of each scored position, in the same order
        sums = torch.zeros(batch["scored"].shape[0], device=device).index_add_(0, row, kl)
        per_sequence += sums.cpu().tolist()
    model.train(was_training)
    return ForwardKL(per_sequence, [len(c) for _, c in sequences])


def sample_base_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    k: int,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> list[tuple[list[int], list[int]]]:
    """K completions per prompt sampled from the base (adapter off) at temperature 1, top-p 1: draws from pi_0.

    Returns (prompt ids, sampled ids up to and including EOS) in prompt-major order, the
    token ids as sampled (no detokenise/retokenise round trip).
    """
    from helpers.rollouts import sample_completions

    with model.disable_adapter():
        samples = sample_completions(
            model,
            tokenizer,
            prompts,
            k=k,
            temperature=1.0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            seed=seed,
            desc="base samples",
            return_ids=True,
        )
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return [(prompt_ids[i // k], ids) for i, (_, _, ids) in enumerate(samples) if ids]


def forward_kl_by_adapter(
    base_dir: str | os.PathLike,
    adapter_dirs: Mapping[str, str | os.PathLike],
    sequences: Sequences,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "float32",
) -> dict[str, ForwardKL]:
    """forward_kl of several adapters of one base, loading the base once (each adapter unloaded after use)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name, adapter in adapter_dirs.items():
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise FunctionSpaceError(
                f"adapter {name!r}: {adapter} has no adapter_config.json (not a PEFT adapter)"
            )
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=getattr(torch, dtype)).to(device)
    results = {}
    for name, adapter in adapter_dirs.items():
        model = PeftModel.from_pretrained(base, str(adapter))
        results[name] = forward_kl(model, sequences, pad, batch_size, desc=f"KL(base || {name})")
        base = model.unload()  # the next adapter sees the bare base
    return results
