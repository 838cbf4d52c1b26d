"""Our token log-probs and losses against TRL's trainers on the same tiny model and batch."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset

from helpers import losses
from helpers.logps import token_logps
from helpers.prompting import tokenize_pair
from tests.builders import make_model, make_rollouts, make_tokenizer

trl = pytest.importorskip("trl")

# activation_checkpointing is transformers 5's name for gradient_checkpointing
COMMON = dict(
    bf16=False, activation_checkpointing=False, report_to=[], use_cpu=True, per_device_train_batch_size=4
)


def sft_batch(tokenizer, rows):
    """Right-padded input_ids / attention_mask / completion_mask, plus TRL's labels for the same batch."""
    pairs = [tokenize_pair(tokenizer, r["prompt"], r["completion"], max_length=64) for r in rows]
    width = max(len(p["input_ids"]) for p in pairs)
    ids = torch.full((len(pairs), width), tokenizer.pad_token_id)
    attn = torch.zeros_like(ids)
    comp = torch.zeros_like(ids)
    for i, p in enumerate(pairs):
        n = len(p["input_ids"])
        ids[i, :n] = torch.tensor(p["input_ids"])
        attn[i, :n] = 1
        comp[i, :n] = torch.tensor(p["completion_mask"])
    return ids, attn, comp


def test_token_logps_match_dense_log_softmax() -> None:
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer))
    ids, attn, comp = sft_batch(tokenizer, make_rollouts(2, 2))
    got = token_logps(model, ids, attn, comp)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    dense = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1) * comp[:, 1:]
    assert got.shape == (ids.shape[0], ids.shape[1] - 1)
    torch.testing.assert_close(got, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss_type", ["nll", "dft"])
def test_sft_and_dft_match_trl_sft_trainer(tmp_path, loss_type: str) -> None:
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer))
    rows = make_rollouts(2, 2)
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    args = trl.SFTConfig(output_dir=str(tmp_path), loss_type=loss_type, max_length=64, **COMMON)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)

    ids, attn, comp = sft_batch(tokenizer, rows)
    labels = ids.masked_fill(comp == 0, -100)
    theirs = trainer.compute_loss(trainer.model, {"input_ids": ids, "attention_mask": attn, "labels": labels})

    logps = token_logps(trainer.model, ids, attn, comp)
    ours, _ = losses.LOSSES["sft" if loss_type == "nll" else "dft"](logps, comp[:, 1:])
    assert abs(ours.item() - theirs.item()) < 1e-5
    assert ours.item() > 0


def test_dpo_matches_trl_dpo_trainer(tmp_path) -> None:
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), seed=1)
    ref_model = copy.deepcopy(model)
    # move the policy away from the reference so the loss is not log 2 by construction
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    rows = make_rollouts(4, 2)
    pairs = [
        {
            "prompt": rows[i]["prompt"],
            "chosen": rows[i]["completion"],
            "rejected": rows[i + 1]["completion"] + " 9",
        }
        for i in range(0, len(rows), 2)
    ]
    args = trl.DPOConfig(output_dir=str(tmp_path), beta=0.1, max_length=64, **COMMON)
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    theirs = trainer.compute_loss(trainer.model, dict(batch))

    ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    policy = token_logps(trainer.model, ids, attn, comp)
    with torch.no_grad():
        ref = token_logps(trainer.ref_model, ids, attn, comp)
    mask = comp[:, 1:]
    ref_chosen, ref_rejected = (ref * mask).sum(1).chunk(2)
    ours, metrics = losses.dpo(policy, mask, ref_chosen, ref_rejected, beta=0.1)
    assert abs(ours.item() - theirs.item()) < 1e-5
    assert abs(ours.item() - 0.6931) > 1e-4  # not the trivial log 2 of identical policy and reference
    assert 0.0 <= metrics["rewards_accuracy"] <= 1.0
