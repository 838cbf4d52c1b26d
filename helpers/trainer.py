"""The transformers Trainer that trains every offline method: tokenise, pad, dispatch to LOSSES.

One `MethodTrainer` for all methods (the Trainer supplies AdamW, the schedule,
clipping, gradient accumulation, DDP under `accelerate launch` and the progress
bar); only `compute_loss` differs from the stock Trainer, and it only differs by the
entry of `helpers.losses.LOSSES` it calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import Trainer

from helpers import losses
from helpers.cache import atomic_write_json, replace_folder, scratch_path
from helpers.logps import token_logps
from helpers.method_data import MethodDataError
from helpers.prompting import tokenize_pair

from .progress import tqdm

FLOAT_COLUMNS = ("reward", "advantage", "ref_chosen_logps", "ref_rejected_logps", "ref_logps", "ref_kl_logps")
# A last_good folder holds an adapter and this record; train.check_out_dir recognises it by both.
LAST_GOOD_MARKERS = ("last_good.json", "adapter_config.json")
# Losses that are a token mean over their batch. With gradient accumulation the trainer divides their
# token sums by the completion tokens of the whole accumulated batch (and of every process), as TRL's
# SFTTrainer does through `num_items_in_batch`; the other losses (DPO: a mean over pairs) are averaged
# over the micro-batches, as TRL's DPOTrainer does.
TOKEN_MEAN = ("sft", "rft", "dft", "rift", "rift_paper", "grpo", "grpo_paper")


def loss_tokens(method: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The completion tokens a token-mean loss averages over in one batch (RFT: correct rows only)."""
    mask = batch["completion_mask"][:, 1:]
    if method == "rft":
        mask = mask * (batch["reward"] > 0).to(mask.dtype)[:, None]
    return mask.sum()


class TrainingDiverged(RuntimeError):
    """The loss, a gradient or the weights became NaN or infinite; the last finite adapter was kept."""


def tokenize_dataset(
    ds: Dataset, tokenizer: Any, method: str, max_length: int, return_counts: bool = False
) -> Dataset | tuple[Dataset, dict[str, int]]:
    """Token ids and completion masks through helpers.prompting.tokenize_pair (the one prompt format).

    Rows whose prompt leaves no room for a completion token are dropped (DPO: a pair is
    dropped when either side is); with `return_counts`, also returns how many rows were
    kept, how many of those had their completion cut (no EOS), and how many were dropped.
    """

    def encode(row: dict) -> dict:
        if method in losses.BLOCKS:  # two blocks: <text>_input_ids / <text>_completion_mask for each
            sides = {
                text: tokenize_pair(tokenizer, row["prompt"], row[text], max_length)
                for text in losses.BLOCKS[method]
            }
            out = {
                f"{text}_{key}": enc[key]
                for text, enc in sides.items()
                for key in ("input_ids", "completion_mask")
            }
            out["truncated"] = any(enc["truncated"] for enc in sides.values())
            out["dropped"] = any(enc["dropped"] for enc in sides.values())
            return out
        return tokenize_pair(tokenizer, row["prompt"], row["completion"], max_length)

    encoded = ds.map(encode, desc=f"Tokenising {method}")
    dropped = sum(encoded["dropped"])
    if dropped:
        encoded = encoded.filter(
            lambda row: not row["dropped"], desc="Dropping prompts longer than max_length"
        )
    if len(encoded) == 0:
        raise MethodDataError(
            f"{method}: every prompt is at least model.max_length ({max_length}) tokens long, so no row is left "
            "to train on; raise model.max_length"
        )
    counts = {"kept": len(encoded), "truncated": sum(encoded["truncated"]), "dropped": dropped}
    return (encoded, counts) if return_counts else encoded


class MethodCollator:
    """Right padding; DPO rows become [all chosen; all rejected] as TRL lays them out.

    `blocks` (text columns, losses.BLOCKS[method]) gives any two-block method that layout;
    `dpo=True` is blocks=("chosen", "rejected").
    """

    def __init__(self, pad_token_id: int, dpo: bool = False, blocks: tuple[str, str] | None = None):
        self.pad_token_id = pad_token_id
        self.blocks = blocks or (("chosen", "rejected") if dpo else None)

    def _pad(self, seqs: Sequence[list[int]], masks: Sequence[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        completion_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (seq, mask) in enumerate(zip(seqs, masks, strict=True)):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            attention_mask[i, : len(seq)] = 1
            completion_mask[i, : len(seq)] = torch.tensor(mask)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if self.blocks:
            seqs = [r[f"{b}_input_ids"] for b in self.blocks for r in rows]
            masks = [r[f"{b}_completion_mask"] for b in self.blocks for r in rows]
        else:
            seqs = [r["input_ids"] for r in rows]
            masks = [r["completion_mask"] for r in rows]
        batch = self._pad(seqs, masks)
        for name in FLOAT_COLUMNS:
            if name in rows[0]:
                batch[name] = torch.tensor([float(r[name]) for r in rows], dtype=torch.float32)
        return batch


@torch.no_grad()
def reference_logps(
    model: torch.nn.Module,
    ds: Dataset,
    collator: MethodCollator,
    batch_size: int,
    device: torch.device | str,
    names: tuple[str, str] = ("ref_chosen_logps", "ref_rejected_logps"),
) -> dict[str, list[float]]:
    """Sequence-summed completion log-probs of both blocks (chosen, rejected) under the base (adapters off)."""
    model.to(device)
    was_training = model.training
    model.eval()
    chosen: list[float] = []
    rejected: list[float] = []
    with model.disable_adapter():
        for start in tqdm(range(0, len(ds), batch_size), desc="Reference log-probs (adapter off)"):
            batch = collator([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            logps = token_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
            sums = (logps.float() * batch["completion_mask"][:, 1:]).sum(dim=1).cpu()
            c, r = sums.chunk(2)
            chosen += c.tolist()
            rejected += r.tolist()
    model.train(was_training)
    return {names[0]: chosen, names[1]: rejected}


class MethodTrainer(Trainer):
    """A Trainer whose loss is `helpers.losses.LOSSES[method]` on token log-probs.

    Stops with TrainingDiverged at the first non-finite loss or gradient (on any
    process), or weights an optimiser step made non-finite, after saving the last finite
    trainable weights (kept in memory at the start of every optimiser step; LoRA weights
    are small) to `last_good_dir` as an adapter.
    """

    def __init__(
        self, *args: Any, method: str, hparams: dict[str, float], last_good_dir: Path, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        if method not in losses.LOSSES:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(losses.LOSSES)}")
        self.method = method
        self.hparams = hparams
        self.last_good_dir = Path(last_good_dir)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.rows_seen = 0  # training rows (DPO: pairs) this process has computed a loss on
        self._good: dict[str, torch.Tensor] = {}  # trainable weights at the start of step _good_step + 1
        self._good_step = -1
        # token-mean losses arrive normalised over the accumulated batch; the Trainer must not divide again
        self.loss_is_scaled_for_ga = method in TOKEN_MEAN

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """Completion tokens of the accumulated batch, over all processes (None for DPO's pair mean)."""
        if self.method not in TOKEN_MEAN or not batch_samples:
            return None
        count = sum(loss_tokens(self.method, batch).to(device) for batch in batch_samples)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logps = token_logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"])
        mask = inputs["completion_mask"][:, 1:]
        columns = {name: inputs.get(name) for name in losses.LOSS_COLUMNS[self.method]}
        # looked up at call time so a test can swap a loss in the registry
        loss, metrics = losses.LOSSES[self.method](logps.float(), mask, **columns, **self.hparams)
        if num_items_in_batch is not None and self.method in TOKEN_MEAN:
            # sum / micro-batch tokens -> sum / accumulated tokens; DDP then averages over processes
            # (clamped, so an accumulated batch without completion tokens gives a finite zero, as in TRL)
            loss = loss * (
                loss_tokens(self.method, inputs) / torch.as_tensor(num_items_in_batch).clamp(min=1)
            )
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        self.rows_seen += inputs["input_ids"].shape[0] // (2 if self.method in losses.BLOCKS else 1)
        for key, value in metrics.items():
            self._metrics[key].append(float(value))
        return (loss, {"logps": logps}) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.state.global_step != self._good_step:  # the first micro-batch of an optimiser step
            self._keep_finite_weights()
        loss = super().training_step(model, inputs, num_items_in_batch)
        # The optimiser has not stepped yet: a bad loss or gradient is caught before it reaches the weights.
        loss_ok = bool(torch.isfinite(loss).all())
        if self._any_process(not (loss_ok and self._finite(p.grad for _, p in self._trainable()))):
            what = f"non-finite loss ({loss.item()})" if not loss_ok else "non-finite gradient"
            self._diverged(f"{what} at step {self.state.global_step + 1}")
        return loss

    def _trainable(self) -> list[tuple[str, torch.Tensor]]:
        model = self.accelerator.unwrap_model(self.model)
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    @staticmethod
    def _finite(tensors) -> bool:
        flags = [torch.isfinite(t).all() for t in tensors if t is not None]
        return not flags or bool(torch.stack([f.to(flags[0].device) for f in flags]).all())  # one sync

    def _any_process(self, flag: bool) -> bool:
        bad = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        return bad.item() > 0

    def _keep_finite_weights(self) -> None:
        """Copy the trainable weights (the result of the last step), or stop if that step made them non-finite."""
        params = self._trainable()
        if self._any_process(not self._finite(p for _, p in params)):
            self._diverged(f"non-finite weights after step {self.state.global_step}")
        self._good = {n: p.detach().clone() for n, p in params}
        self._good_step = self.state.global_step

    def _diverged(self, what: str) -> None:
        """Put the last finite weights back, save them to last_good_dir, and stop."""
        with torch.no_grad():
            for name, param in self._trainable():
                if name in self._good:
                    param.copy_(self._good[name])
        self._save_last_good(what)
        raise TrainingDiverged(
            f"{self.method}: {what}; the last finite adapter (after step {self._good_step}) is in "
            f"{self.last_good_dir}"
        )

    def total_rows_seen(self) -> int:
        """Rows seen by all processes together."""
        seen = torch.tensor([self.rows_seen], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            seen = self.accelerator.reduce(seen, reduction="sum")
        return int(seen.item())

    def _save_last_good(self, what: str) -> None:
        """Write the adapter, the log so far and what happened to last_good_dir (main process, by renames)."""
        if self.accelerator.is_main_process:
            self.last_good_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp = scratch_path(self.last_good_dir)
            self.accelerator.unwrap_model(self.model).save_pretrained(tmp)
            atomic_write_json(tmp / "training_log.json", training_log(self.state.log_history))
            record = {"method": self.method, "step": self._good_step, "stopped": what}
            atomic_write_json(tmp / "last_good.json", record)
            replace_folder(tmp, self.last_good_dir)
        self.accelerator.wait_for_everyone()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the loss's metrics, averaged over the logging window and over processes."""
        if self._metrics:
            keys = sorted(self._metrics)
            local = torch.tensor([sum(self._metrics[k]) / len(self._metrics[k]) for k in keys])
            local = local.to(self.accelerator.device)
            if self.accelerator.num_processes > 1:
                local = self.accelerator.reduce(local, reduction="mean")
            logs.update(dict(zip(keys, local.tolist(), strict=True)))
            self._metrics.clear()
        super().log(logs, start_time)


def training_log(log_history: list[dict]) -> list[dict]:
    """The per-step entries of a Trainer's log history (loss, grad_norm, lr and the loss's metrics)."""
    rows = []
    for entry in log_history:
        if "loss" not in entry:
            continue
        row = dict(entry)
        if "learning_rate" in row:
            row["lr"] = row.pop("learning_rate")
        rows.append(row)
    return rows
