"""token_logps on CPU forwards rows in length-sorted groups (issue 15): the same log-probs and the
same gradients as one padded forward, up to float32 rounding, and it really does group."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from helpers import logps as L
from helpers.logps import length_batches, token_logps
from helpers.trainer import MethodCollator
from tests.builders import make_model, make_tokenizer

EPS32 = torch.finfo(torch.float32).eps
# log-probs of ~ -6 (a 320-token vocabulary) through GEMMs of another shape: a few ulps of 6
LOGP_TOL = 32 * EPS32 * 6


def _batch(tokenizer, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded rows of the given lengths (random tokens); the second half of each row is completion."""
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(4, len(tokenizer), (n,), generator=g).tolist() for n in lengths]
    masks = [[0] * (n // 2) + [1] * (n - n // 2) for n in lengths]
    return MethodCollator(tokenizer.pad_token_id)._pad(seqs, masks)


def _lora(vocab: int) -> torch.nn.Module:
    model = make_model(vocab)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(model, config)
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # nonzero B, so the LoRA path shapes the log-probs and gets gradients
            torch.nn.init.normal_(p, std=0.05)
    return model


LENGTHS = [9, 31, 14, 40, 22, 9, 27, 18]


@pytest.mark.parametrize("max_tokens", [40, 64, 100])
def test_groups_give_one_forwards_logps_and_gradients(max_tokens: int) -> None:
    tokenizer = make_tokenizer()
    model = _lora(len(tokenizer))
    b = _batch(tokenizer, LENGTHS)
    args = (b["input_ids"], b["attention_mask"], b["completion_mask"])
    grads = []
    outs = []
    for budget in (None, max_tokens):
        model.zero_grad()
        out = token_logps(model, *args, max_tokens=budget)
        (-(out * torch.linspace(0.5, 1.5, out.shape[1])).sum()).backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert len(length_batches(b["attention_mask"].sum(1).tolist(), len(LENGTHS), max_tokens)) > 1
    torch.testing.assert_close(outs[1], outs[0], atol=LOGP_TOL, rtol=0)
    for name, whole in grads[0].items():
        # a weight gradient sums ~200 token terms: relative rounding of a few hundred ulps at most
        scale = whole.abs().max().clamp(min=1e-12)
        assert (grads[1][name] - whole).abs().max() / scale < 512 * EPS32, name


def test_auto_groups_on_cpu(monkeypatch) -> None:
    """The default really splits a CPU batch (a dead lever would still pass the test above)."""
    tokenizer = make_tokenizer()
    model = _lora(len(tokenizer))
    b = _batch(tokenizer, LENGTHS)
    widths: list[int] = []
    hook = model.get_base_model().model.embed_tokens.register_forward_hook(
        lambda mod, inp, out: widths.append(inp[0].shape[1])
    )
    monkeypatch.setattr(L, "CPU_TRAIN_TOKENS", 64)
    token_logps(model, b["input_ids"], b["attention_mask"], b["completion_mask"])
    hook.remove()
    assert len(widths) > 1 and max(widths) == max(LENGTHS) and min(widths) < max(LENGTHS)


def test_left_padded_rows_get_one_forward() -> None:
    """Trimming columns is only safe with right padding: a left-padded batch is forwarded whole."""
    tokenizer = make_tokenizer()
    model = _lora(len(tokenizer))
    b = _batch(tokenizer, LENGTHS)
    shifts = (b["attention_mask"].shape[1] - b["attention_mask"].sum(1)).tolist()
    left = {k: torch.stack([torch.roll(r, n) for r, n in zip(v, shifts, strict=True)]) for k, v in b.items()}
    whole = token_logps(model, left["input_ids"], left["attention_mask"], left["completion_mask"], None)
    got = token_logps(model, left["input_ids"], left["attention_mask"], left["completion_mask"], 40)
    torch.testing.assert_close(got, whole, atol=0, rtol=0)
