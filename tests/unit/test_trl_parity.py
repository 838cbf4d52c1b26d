"""Our tokenisation, token log-probs and losses against TRL's trainers on the same tiny model and batch.

TRL builds its batches its own way (SFT: tokenise prompt + completion together and mark the
completion where the two token lists diverge; DPO: its collator's completion_mask), so a
shifted prompt/completion boundary on our side fails here rather than being copied into the
reference.
"""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset

from helpers import losses
from helpers.logps import token_logps
from helpers.trainer import MethodCollator, tokenize_dataset
from tests.builders import make_model, make_rollouts, make_tokenizer

trl = pytest.importorskip("trl")

# activation_checkpointing is transformers 5's name for gradient_checkpointing
COMMON = dict(
    bf16=False, activation_checkpointing=False, report_to=[], use_cpu=True, per_device_train_batch_size=4
)
EPS32 = torch.finfo(torch.float32).eps
# Log-probs of ~ -log(320) ~ -6 in float32, reached by two code paths (TRL's logits and
# cross-entropy, our fused LM head): a few ulps of 6 apart. A token-mean loss inherits that
# relative error (NLL ~ 6; DFT's terms -log p * p ~ 0.02 carry it scaled by p).
LOGP_TOL = 32 * EPS32 * 6
LOSS_REL = 64 * EPS32


def our_batch(tokenizer, rows, method="sft"):
    """Our trainer's batch for `rows`: helpers.trainer.tokenize_dataset and MethodCollator (right padding)."""
    ds = tokenize_dataset(Dataset.from_list(rows), tokenizer, method, max_length=64)
    return MethodCollator(tokenizer.pad_token_id, dpo=method == "dpo")(list(ds))


def trl_batch(trainer):
    """TRL's own batch of its prepared training set, in dataset order."""
    ds = trainer.train_dataset
    return trainer.data_collator([ds[i] for i in range(len(ds))])


def test_token_logps_match_dense_log_softmax() -> None:
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer))
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in make_rollouts(2, 2)]
    batch = our_batch(tokenizer, rows)
    ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    got = token_logps(model, ids, attn, comp)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    dense = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1) * comp[:, 1:]
    assert got.shape == (ids.shape[0], ids.shape[1] - 1)
    # float32 log-probs of ~ -6 by two routes: a few ulps of 6
    torch.testing.assert_close(got, dense, atol=LOGP_TOL, rtol=0)


@pytest.mark.parametrize("loss_type", ["nll", "dft"])
def test_sft_and_dft_match_trl_sft_trainer(tmp_path, loss_type: str) -> None:
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer))
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in make_rollouts(3, 2)]
    args = trl.SFTConfig(output_dir=str(tmp_path), loss_type=loss_type, max_length=64, **COMMON)
    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    theirs_batch = trl_batch(trainer)
    assert (theirs_batch["attention_mask"] == 0).any()  # rows of different lengths: padding is tested too

    ours_batch = our_batch(tokenizer, rows)
    ids, attn, comp = ours_batch["input_ids"], ours_batch["attention_mask"], ours_batch["completion_mask"]
    # the same tokens, and our completion mask is exactly where TRL computes its loss
    assert torch.equal(ids, theirs_batch["input_ids"]) and torch.equal(attn, theirs_batch["attention_mask"])
    assert torch.equal(comp.bool(), theirs_batch["labels"] != -100)

    theirs = trainer.compute_loss(trainer.model, theirs_batch)
    logps = token_logps(trainer.model, ids, attn, comp)
    method = "sft" if loss_type == "nll" else "dft"
    ours, _ = losses.LOSSES[method](logps, comp[:, 1:])
    tol = LOSS_REL * abs(theirs.item())
    assert ours.item() == pytest.approx(theirs.item(), rel=0, abs=tol)
    # the comparison can tell masks apart: the loss over every real token is far from it
    every, _ = losses.LOSSES[method](token_logps(trainer.model, ids, attn, attn), attn[:, 1:])
    assert abs(every.item() - ours.item()) > 100 * tol


def test_dpo_matches_trl_dpo_trainer(tmp_path) -> None:
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), seed=1)
    ref_model = copy.deepcopy(model)
    # move the policy away from the reference so the loss is not log 2 by construction
    # (this seed gives 3 of 4 pairs a positive margin: a swap of chosen and rejected shows in the accuracy)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
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
    batch = trl_batch(trainer)
    theirs = trainer.compute_loss(trainer.model, dict(batch))
    mode = "train" if trainer.model.training else "eval"  # where TRL files this batch's metrics
    trl_metrics = {k: v[-1] for k, v in trainer._metrics[mode].items()}

    # our DPO data path lays the batch out exactly as TRL does: [chosen rows; rejected rows]
    ours_batch = our_batch(tokenizer, pairs, "dpo")
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(ours_batch[key], batch[key]), key
    ids, attn, comp = ours_batch["input_ids"], ours_batch["attention_mask"], ours_batch["completion_mask"]
    policy = token_logps(trainer.model, ids, attn, comp)
    with torch.no_grad():
        ref = token_logps(trainer.ref_model, ids, attn, comp)
    mask = comp[:, 1:]
    ref_chosen, ref_rejected = (ref * mask).sum(1).chunk(2)
    ours, metrics = losses.dpo(policy, mask, ref_chosen, ref_rejected, beta=0.1)
    # sequence sums of ~20 completion log-probs of ~ -6 (~ -125) in float32, times beta = 0.1
    dpo_tol = 32 * EPS32 * 200 * 0.1
    assert ours.item() == pytest.approx(theirs.item(), abs=dpo_tol)
    assert (
        abs(ours.item() - 0.6931) > 100 * dpo_tol
    )  # not the trivial log 2 of identical policy and reference
    for ours_key, trl_key in [
        ("rewards_chosen", "rewards/chosen"),
        ("rewards_rejected", "rewards/rejected"),
        ("rewards_margin", "rewards/margins"),
        ("rewards_accuracy", "rewards/accuracies"),
    ]:
        assert metrics[ours_key] == pytest.approx(trl_metrics[trl_key], abs=dpo_tol), ours_key
    # chosen and rejected rewards differ, so a swap of the two would show in every metric above
    assert abs(metrics["rewards_chosen"] - metrics["rewards_rejected"]) > 100 * dpo_tol
    assert metrics["rewards_accuracy"] == 0.75
