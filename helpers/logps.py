"""Per-token log-probabilities of the next tokens, without materialising (B, T, vocab) logits.

We reuse TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`, the one its
SFT/DPO/GRPO trainers use): the last hidden states go through the LM head in tiles
and only the log-prob of each label survives, forward and backward. With a 151k
vocabulary and 4k-token rollouts this is the difference between fitting and not.

On CPU the rows also go through the model shortest first, in groups of at most
CPU_TRAIN_TOKENS padded tokens: a batch of rollouts padded to its longest row is ~40%
padding on `tiny`, and a CPU pays for every padded token (forward and backward alike).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from trl.trainer.utils import add_fused_lm_head

_PATCHED = "_wsg_fused_lm_head"

# Padded tokens per forward on CPU. A tiny-profile training step (16 rollouts, forward and
# backward) took 219 ms in one forward and 172 ms in groups of 1024 (181 at 2048, 176 at 512),
# idle AMD EPYC, one thread. GPUs keep one forward: there padding is cheaper than launches.
CPU_TRAIN_TOKENS = 1024


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under DDP/accelerate and PEFT wrappers (the one whose forward is patched)."""
    while hasattr(model, "module"):  # DistributedDataParallel
        model = model.module
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    return model


def ensure_fused_head(model: torch.nn.Module) -> None:
    """Patch the underlying causal LM once so `forward(..., fused_lm_head=True)` returns log-probs."""
    base = _unwrap(model)
    if not getattr(base, _PATCHED, False):
        add_fused_lm_head(base, outputs=("log_probs",))
        setattr(base, _PATCHED, True)


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
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


def _fused_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True, use_cache=False
    )
    return out.log_probs


def _right_padded_lengths(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """Each row's length when every row is ones then zeros (right padding), else None."""
    lengths = attention_mask.sum(dim=1)
    expected = torch.arange(attention_mask.shape[1], device=attention_mask.device) < lengths[:, None]
    return lengths if bool((attention_mask.bool() == expected).all()) else None


def token_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    max_tokens: int | None | str = "auto",
) -> torch.Tensor:
    """Log-probs (B, T-1) of tokens 1..T-1 given their prefix, zero where `completion_mask[:, 1:]` is 0.

    Right padding: position t of the output scores `input_ids[:, t + 1]`, so the
    output aligns with `completion_mask[:, 1:]`. Call it on the model the trainer
    hands to compute_loss (DDP and PEFT wrappers are fine: the patch sits below them).
    `max_tokens` ("auto": CPU_TRAIN_TOKENS on CPU, None elsewhere) forwards right-padded rows
    in length-sorted groups of at most that many padded tokens, each trimmed to its longest
    row; the rows are independent, so only float rounding differs from one forward. A
    DistributedDataParallel model always gets one forward (its reducer expects one per backward).
    """
    if input_ids.shape != attention_mask.shape or input_ids.shape != completion_mask.shape:
        raise ValueError(
            f"input_ids, attention_mask and completion_mask must have one shape; got {tuple(input_ids.shape)}, "
            f"{tuple(attention_mask.shape)}, {tuple(completion_mask.shape)}"
        )
    ensure_fused_head(model)
    if max_tokens == "auto":
        max_tokens = CPU_TRAIN_TOKENS if input_ids.device.type == "cpu" else None
    lengths = _right_padded_lengths(attention_mask) if max_tokens is not None else None
    if lengths is None or isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return _fused_logps(model, input_ids, attention_mask, completion_mask)
    groups = length_batches(lengths.tolist(), input_ids.shape[0], max_tokens)
    if len(groups) == 1 and int(lengths.max()) == input_ids.shape[1]:
        return _fused_logps(model, input_ids, attention_mask, completion_mask)
    width = input_ids.shape[1] - 1
    parts = []
    for group in groups:
        rows = torch.tensor(group, device=input_ids.device)
        w = max(2, int(lengths[rows].max()))  # a row's own length; at least one scored position
        logps = _fused_logps(model, input_ids[rows, :w], attention_mask[rows, :w], completion_mask[rows, :w])
        parts.append(torch.nn.functional.pad(logps, (0, width - logps.shape[1])))
    order = torch.tensor([i for group in groups for i in group], device=input_ids.device)
    return torch.cat(parts)[torch.argsort(order)]
