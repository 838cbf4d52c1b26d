"""Per-token log-probabilities of the next tokens, without materialising (B, T, vocab) logits.

We reuse TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`, the one its
SFT/DPO/GRPO trainers use): the last hidden states go through the LM head in tiles
and only the log-prob of each label survives, forward and backward. With a 151k
vocabulary and 4k-token rollouts this is the difference between fitting and not.
"""

from __future__ import annotations

import torch
from trl.trainer.utils import add_fused_lm_head

_PATCHED = "_wsg_fused_lm_head"


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


def token_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """Log-probs (B, T-1) of tokens 1..T-1 given their prefix, zero where `completion_mask[:, 1:]` is 0.

    Right padding: position t of the output scores `input_ids[:, t + 1]`, so the
    output aligns with `completion_mask[:, 1:]`. Call it on the model the trainer
    hands to compute_loss (DDP and PEFT wrappers are fine: the patch sits below them).
    """
    if input_ids.shape != attention_mask.shape or input_ids.shape != completion_mask.shape:
        raise ValueError(
            f"input_ids, attention_mask and completion_mask must have one shape; got {tuple(input_ids.shape)}, "
            f"{tuple(attention_mask.shape)}, {tuple(completion_mask.shape)}"
        )
    ensure_fused_head(model)
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True, use_cache=False
    )
    return out.log_probs
