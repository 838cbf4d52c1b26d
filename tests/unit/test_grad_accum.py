"""Gradient accumulation: token-mean losses are normalised by the accumulated batch's tokens, as TRL does.

One SGD step (lr 1, no clipping, no weight decay) moves the weights by minus the gradient, so
comparing the weights after one step compares the gradients of the whole accumulated batch.
"""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from transformers import TrainingArguments

from helpers.logps import token_logps
from helpers.losses import loss_hparams
from helpers.method_data import build_method_dataset
from helpers.profiles import TrainConfig
from helpers.prompting import build_completion, build_prompt
from helpers.trainer import MethodCollator, MethodTrainer, tokenize_dataset
from tests.builders import make_model, make_tokenizer

trl = pytest.importorskip("trl")

ONE_SGD_STEP = dict(
    max_steps=1,
    learning_rate=1.0,
    optim="sgd",
    lr_scheduler_type="constant",
    weight_decay=0.0,
    max_grad_norm=0.0,  # no clipping
    seed=7,
    bf16=False,
    activation_checkpointing=False,
    report_to=[],
    use_cpu=True,
    disable_tqdm=True,
    logging_steps=1,
)


def rollouts() -> list[dict]:
    """Four graded rollouts of two prompts whose completions differ several-fold in length."""
    rows = []
    for pid, (a, b) in enumerate([(3, 4), (12, 5)]):
        question = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
        long = " ".join(f"He counts {i} + {i} = {2 * i}." for i in range(1, 9))
        wrong = f"{long} Tom has {a} + {b} = {a + b + 1} apples.\n#### {a + b + 1}"
        for text, correct in [(f"#### {a + b}", True), (wrong, False)]:
            rows.append(
                {
                    "prompt_id": pid,
                    "prompt": build_prompt(question),
                    "completion": build_completion(text),
                    "reward": float(correct),
                }
            )
    return rows


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def step(model: torch.nn.Module, ds: Dataset, method: str, tokenizer, tmp_path, batch: int, accum: int):
    """The weights after one optimiser step of our trainer, and the trainer."""
    extra = {}
    if method == "dpo":  # a reference near the policy, so the sigmoid is not saturated
        collator = MethodCollator(tokenizer.pad_token_id, dpo=True)
        rows = collator([ds[i] for i in range(len(ds))])
        with torch.no_grad():
            logps = token_logps(model, rows["input_ids"], rows["attention_mask"], rows["completion_mask"])
        chosen, rejected = (logps * rows["completion_mask"][:, 1:]).sum(1).chunk(2)
        offsets = torch.linspace(-1.0, 1.0, len(ds))
        ds = ds.add_column("ref_chosen_logps", (chosen + offsets).tolist())
        ds = ds.add_column("ref_rejected_logps", (rejected - offsets).tolist())
    args = TrainingArguments(
        output_dir=str(tmp_path / f"ours-{method}-{batch}x{accum}"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accum,
        remove_unused_columns=False,
        **ONE_SGD_STEP,
        **extra,
    )
    trainer = MethodTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=MethodCollator(tokenizer.pad_token_id, dpo=method == "dpo"),
        processing_class=tokenizer,
        method=method,
        hparams=loss_hparams(method, TrainConfig()),
        last_good_dir=tmp_path / "last_good",
    )
    trainer.train()
    return weights(model), trainer


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def test_sft_and_dft_match_trl_over_two_accumulation_steps(tmp_path, tokenizer) -> None:
    sft_rows = build_method_dataset(rollouts(), "sft")
    ds = tokenize_dataset(sft_rows, tokenizer, "sft", max_length=256)
    tokens = [sum(m[1:]) for m in ds["completion_mask"]]
    assert max(tokens) > 4 * min(tokens)  # unequal lengths: a mean of micro-batch means would differ
    base = make_model(len(tokenizer), seed=3)
    for loss_type, method in (("nll", "sft"), ("dft", "dft")):
        trl_model = copy.deepcopy(base)
        config = trl.SFTConfig(
            output_dir=str(tmp_path / f"trl-{loss_type}"),
            per_device_train_batch_size=1,
            gradient_accumulation_steps=2,
            loss_type=loss_type,
            completion_only_loss=True,
            max_length=256,
            **ONE_SGD_STEP,
        )
        trl_data = ds.select_columns(["input_ids", "completion_mask"])
        trl_trainer = trl.SFTTrainer(
            model=trl_model, args=config, train_dataset=trl_data, processing_class=tokenizer
        )
        trl_trainer.train()
        theirs = weights(trl_model)

        ours, trainer = step(copy.deepcopy(base), ds, method, tokenizer, tmp_path, batch=1, accum=2)
        before = weights(base)
        moved = max((theirs[n] - before[n]).abs().max().item() for n in before)
        assert moved > 1e-4, "the step must move the weights for the comparison to mean anything"
        for name in before:
            torch.testing.assert_close(
                ours[name] - before[name], theirs[name] - before[name], rtol=1e-4, atol=1e-6
            )
        assert trainer.total_rows_seen() == 2  # rows seen: micro-batch x accumulation steps
        log = [row for row in trainer.state.log_history if "loss" in row]
        trl_log = [row for row in trl_trainer.state.log_history if "loss" in row]
        assert log[0]["loss"] == pytest.approx(trl_log[0]["loss"], rel=1e-4)  # the reported loss agrees too


@pytest.mark.parametrize(
    "method", ["sft", "rft", "dft", "rift", "rift_paper", "grpo", "grpo_paper", "dpo", "rft on every rollout"]
)
def test_accumulating_micro_batches_equals_one_big_batch(tmp_path, tokenizer, method) -> None:
    # the accumulated batch of 2 x 1 rows must give the gradient of one batch of 2 rows: token-mean losses
    # over all its tokens, DPO as a mean over its pairs; RFT counts only its correct rows' tokens
    rows = rollouts() + [dict(r, prompt_id=r["prompt_id"] + 2) for r in rollouts()]
    data = "sft" if method == "rft on every rollout" else method
    method = method.split()[0]
    ds = tokenize_dataset(build_method_dataset(rows, data, seed=1), tokenizer, method, max_length=256)
    base = make_model(len(tokenizer), seed=5)
    before = weights(base)
    big, _ = step(copy.deepcopy(base), ds, method, tokenizer, tmp_path, batch=2, accum=1)
    small, trainer = step(copy.deepcopy(base), ds, method, tokenizer, tmp_path, batch=1, accum=2)
    assert max((big[n] - before[n]).abs().max().item() for n in before) > 1e-5
    for name in before:
        torch.testing.assert_close(small[name] - before[name], big[name] - before[name], rtol=1e-4, atol=1e-6)
    assert trainer.total_rows_seen() == 2


def test_an_accumulated_batch_without_completion_tokens_gives_a_finite_zero(tmp_path, tokenizer) -> None:
    ds = tokenize_dataset(build_method_dataset(rollouts(), "sft"), tokenizer, "sft", max_length=256)
    trainer = MethodTrainer(
        model=make_model(len(tokenizer)),
        args=TrainingArguments(output_dir=str(tmp_path), remove_unused_columns=False, **ONE_SGD_STEP),
        train_dataset=ds,
        data_collator=MethodCollator(tokenizer.pad_token_id),
        method="sft",
        hparams={},
        last_good_dir=tmp_path / "last_good",
    )
    batch = MethodCollator(tokenizer.pad_token_id)([ds[0], ds[1]])
    batch["completion_mask"].zero_()
    count = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    assert int(count) == 0
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=count)
    assert torch.isfinite(loss) and loss.item() == 0.0
