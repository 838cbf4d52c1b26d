"""The one training entry point for every method and control (`train_method`; its command
line `python -m helpers.train ...` is helpers.train_cli).

Every method loads the ONE shared LoRA initialisation (`make_lora_init`) and trains with
the same tokenisation, optimiser (AdamW), schedule, batch, weight decay, clipping, step
count and seed; only the loss and the learning rate (`profile.train.lr_for`) differ.
The adapter at `train.result_step` lands in `out_dir` (PEFT format) with `training_log.json`
and `train_meta.json`, the adapters at `train.save_steps` in `out_dir/steps/` (see
helpers.checkpoints), all written to a temporary folder renamed at the end. An existing
`out_dir` is replaced only if it is empty or an adapter folder written here (it holds
`train_meta.json` and `adapter_config.json`); anything else is refused, never deleted.
If the loss diverges, the last finite weights go to `<out_dir>.last_good`, beside it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
from transformers.utils.notebook import NotebookProgressCallback

from helpers.cache import atomic_write_json, publish, read_json, remove_stale, replace_folder, scratch_path
from helpers.checkpoints import StepAdapters
from helpers.losses import BLOCKS, REFERENCE_COLUMNS, loss_hparams
from helpers.method_data import build_method_dataset, load_rollouts
from helpers.profiles import Profile, profile_source
from helpers.progress import step_progress
from helpers.reference_cache import cached_reference_logps as _cached_reference_logps
from helpers.reference_cache import tokenizer_fingerprint as _tokenizer_fingerprint  # noqa: F401 (tests)
from helpers.seeding import seed_everything
from helpers.train_output import ADAPTER_MARKERS, TrainConfigError, check_out_dir, last_good_path  # noqa: F401
from helpers.train_output import fresh_tmp as _fresh_tmp
from helpers.trainer import (
    LAST_GOOD_MARKERS,
    MethodCollator,
    MethodTrainer,
    TrainingDiverged,
    tokenize_dataset,
)
from helpers.trainer import training_log as _training_log

__all__ = ["CONTROLS", "TrainConfigError", "TrainingDiverged", "make_lora_init", "train_method"]

# Each control is a variant of one method.
CONTROLS = {"sft_order": "sft", "sft_seed": "sft", "dpo_samelr": "dpo", "online_grpo": "grpo"}


def _dtype(profile: Profile) -> torch.dtype:
    return torch.bfloat16 if profile.model.dtype == "bfloat16" else torch.float32


def _lora_config(profile: Profile) -> LoraConfig:
    lora = profile.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.targets),
        task_type="CAUSAL_LM",
    )


def make_lora_init(
    profile: Profile, base_dir: str | os.PathLike, out_dir: str | os.PathLike, seed: int
) -> Path:
    """Create (once) and save the shared LoRA initialisation: lora_A random from `seed`, lora_B zero.

    Reused if `out_dir` already holds an init with the same settings; a folder with
    other settings, or a non-empty folder that holds no init, is an error rather than
    silently reused or replaced.
    """
    out_dir = Path(out_dir)
    meta = {"seed": seed, "r": profile.lora.r, "alpha": profile.lora.alpha, "dropout": profile.lora.dropout}
    meta |= {"targets": list(profile.lora.targets), "base": str(base_dir)}
    if (out_dir / "adapter_config.json").exists():
        old = read_json(out_dir / "init_meta.json") if (out_dir / "init_meta.json").exists() else None
        settings = {k: v for k, v in meta.items() if k != "base"}
        if old is not None and {k: old.get(k) for k in settings} != settings:
            raise TrainConfigError(
                f"{out_dir} holds a LoRA init made with {old}, not {meta}; pass another --init"
            )
        return out_dir
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise TrainConfigError(
            f"--init {out_dir} is a non-empty folder without a LoRA init (no adapter_config.json); "
            "refusing to replace it: pass a new or empty folder"
        )
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=_dtype(profile))
    seed_everything(seed)
    model = get_peft_model(base, _lora_config(profile))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out_dir.parent)
    tmp = scratch_path(out_dir)
    try:
        model.save_pretrained(tmp)
        atomic_write_json(tmp / "init_meta.json", meta)
        # Another run may have made the same init meanwhile: keep the first, never replace it.
        publish(tmp, out_dir, lambda folder: (folder / "adapter_config.json").exists())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def resolve_run(profile: Profile, method: str, control: str | None) -> tuple[float, int]:
    """Check the method/control pair; return the learning rate and the data-order seed."""
    if control is not None:
        if control not in CONTROLS:
            raise TrainConfigError(f"unknown --control {control!r}; expected one of {', '.join(CONTROLS)}")
        if CONTROLS[control] != method:
            raise TrainConfigError(
                f"--control {control} is a variant of --method {CONTROLS[control]}, not {method}"
            )
    lr = profile.train.lr if control == "dpo_samelr" else profile.train.lr_for(method)
    data_seed = profile.train.seed + 1 if control == "sft_order" else profile.train.seed
    return lr, data_seed


def _training_args(
    profile: Profile, output_dir: Path, lr: float, data_seed: int, **extra: Any
) -> dict[str, Any]:
    """The TrainingArguments every method shares (only lr differs)."""
    t = profile.train
    return dict(
        output_dir=str(output_dir),
        max_steps=t.steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim="adamw_torch",
        seed=t.seed,
        data_seed=data_seed,
        bf16=t.bf16,
        activation_checkpointing=False,  # transformers 5's name for gradient_checkpointing
        logging_steps=t.log_every,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        **extra,
    )


def _load(profile: Profile, base_dir: str | os.PathLike, init_dir: Path) -> tuple[Any, PeftModel]:
    """Tokenizer and the base model wrapped with the shared LoRA init (trainable)."""
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=_dtype(profile))
    return tokenizer, PeftModel.from_pretrained(base, init_dir, is_trainable=True)


def _init_for(profile: Profile, base_dir: str | os.PathLike, init_dir: Path, control: str | None) -> Path:
    """The LoRA init this run starts from (sft_seed: one made with init_seed + 1), created if missing."""
    seed = profile.lora.init_seed
    if control == "sft_seed":
        seed += 1
        init_dir = init_dir.with_name(f"{init_dir.name}-seed{seed}")
    with PartialState().main_process_first():
        return make_lora_init(profile, base_dir, init_dir, seed)


def _finish(tmp: Path, out_dir: Path, model: PeftModel, log_history: list[dict], meta: dict) -> None:
    """Save adapter, log and meta in tmp, then swap tmp in for out_dir by renames (main process only)."""
    try:
        model.save_pretrained(tmp)
        atomic_write_json(tmp / "training_log.json", _training_log(log_history))
        atomic_write_json(tmp / "train_meta.json", meta)
        check_out_dir(out_dir)  # files may have appeared there while we trained
        replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _progress_to_terminal(trainer: Any, label: str) -> None:
    """A trainer's steps go to the terminal through the progress side channel (helpers.progress),
    and no Step|Loss table lands in the book page (transformers adds one under a notebook kernel)."""
    trainer.add_callback(step_progress(label))
    trainer.remove_callback(NotebookProgressCallback)


def train_method(
    profile: Profile,
    method: str,
    base_dir: str | os.PathLike,
    rollouts: str | os.PathLike | list[dict],
    out_dir: str | os.PathLike,
    init_dir: str | os.PathLike,
    control: str | None = None,
    last_good_dir: str | os.PathLike | None = None,
) -> Path:
    """Train one method (or control) from the shared LoRA init; return out_dir with the adapter.

    `last_good_dir` (default `<out_dir>.last_good`) receives the last finite weights if the
    loss diverges; pass a folder that outlives out_dir's parent when that is temporary.
    """
    lr, data_seed = resolve_run(profile, method, control)
    out_dir, init_dir = Path(out_dir), Path(init_dir)
    last_good_dir = Path(last_good_dir) if last_good_dir is not None else last_good_path(out_dir)
    check_out_dir(out_dir)
    check_out_dir(last_good_dir, "last_good", LAST_GOOD_MARKERS)
    state = PartialState()
    if control == "online_grpo":
        return _train_online_grpo(profile, base_dir, rollouts, out_dir, init_dir)
    errors = profile.train.step_errors()
    if errors:
        raise TrainConfigError(f"profile {profile.name}: " + "; ".join(errors))
    ds = build_method_dataset(
        rollouts, method, profile.train, seed=profile.train.seed
    )  # errors before any load
    init_dir = _init_for(profile, base_dir, init_dir, control)
    tokenizer, model = _load(profile, base_dir, init_dir)
    ds, counts = tokenize_dataset(ds, tokenizer, method, profile.model.max_length, return_counts=True)
    collator = MethodCollator(tokenizer.pad_token_id, blocks=BLOCKS.get(method))
    if method in REFERENCE_COLUMNS:
        # cached next to the shared init (a stable folder), so DPO, dpo_samelr, ipo, dpo_norm share one pass
        ref = _cached_reference_logps(
            profile, base_dir, model, tokenizer, ds, collator, init_dir.parent, method
        )
        for name, values in ref.items():
            ds = ds.add_column(name, values)

    tmp = _fresh_tmp(out_dir, state)
    trainer = MethodTrainer(
        model=model,
        args=TrainingArguments(**_training_args(profile, tmp, lr, data_seed)),
        train_dataset=ds,
        data_collator=collator,
        processing_class=tokenizer,
        method=method,
        hparams=loss_hparams(method, profile.train),
        last_good_dir=last_good_dir,
    )
    kept = StepAdapters(
        tmp,
        profile.train.save_steps,
        profile.train.result_step,
        trainer.total_rows_seen,
        state.is_main_process,
    )
    trainer.add_callback(kept)
    _progress_to_terminal(trainer, f"{control or method} (seed {profile.train.seed})")
    start = time.time()
    try:
        result = trainer.train()
    except BaseException:
        if state.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.time() - start
    steps = trainer.state.global_step
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    kept.restore_result(unwrapped, steps)  # the run folder holds the result_step adapter
    seen = kept.rows_at[profile.train.result_step]
    meta = {
        "method": method,
        "control": control,
        "profile": profile.name,
        "profile_file": profile_source(profile),
        "lr": lr,
        "steps": steps,
        "result_step": profile.train.result_step,
        "kept_steps": sorted(kept.rows_at),
        "seconds": seconds,
        "examples_seen": seen,  # by result_step
        "examples_seen_total": trainer.total_rows_seen(),
        "rows": len(ds),
        "epochs": seen / len(ds),  # passes over the method's data by result_step
        "tokenization": counts | {"max_length": profile.model.max_length},
        "batch": profile.train.batch_size * profile.train.grad_accum * state.num_processes,
        "processes": state.num_processes,
        "seed": profile.train.seed,
        "data_seed": data_seed,
        "train_loss": result.training_loss,
        "loss_hparams": loss_hparams(method, profile.train),
        "base_dir": str(base_dir),
        "init_dir": str(init_dir),
        "rollouts": str(rollouts) if isinstance(rollouts, str | os.PathLike) else f"{len(ds)} in-memory rows",
    }
    if state.is_main_process:
        _finish(tmp, out_dir, unwrapped, trainer.state.log_history, meta)
    state.wait_for_everyone()
    return out_dir


def _train_online_grpo(
    profile: Profile, base_dir: str | os.PathLike, rollouts: Any, out_dir: Path, init_dir: Path
) -> Path:
    """Control: on-policy GRPO (trl.GRPOTrainer) on the rollouts' prompts, same LoRA config and init."""
    from trl import GRPOConfig, GRPOTrainer

    from helpers.data import is_correct  # written alongside; imported only when this control runs

    records = load_rollouts(rollouts)
    prompts: dict[Any, dict] = {}
    for i, rec in enumerate(records):
        if rec.get("reference") is None:
            raise TrainConfigError(
                f"online_grpo: rollout record {i} has no `reference` answer to grade against"
            )
        prompts.setdefault(rec["prompt_id"], {"prompt": rec["prompt"], "reference": str(rec["reference"])})

    def correctness(completions: list[str], reference: list[str], **_: Any) -> list[float]:
        return [float(is_correct(c, r)) for c, r in zip(completions, reference, strict=True)]

    state = PartialState()
    init_dir = _init_for(profile, base_dir, init_dir, None)
    tokenizer, model = _load(profile, base_dir, init_dir)
    k = profile.rollouts.k
    t = profile.train
    tmp = _fresh_tmp(out_dir, state)
    args = _training_args(
        dataclasses.replace(profile, train=dataclasses.replace(t, steps=t.online_grpo_steps)),
        tmp,
        t.lr,
        t.seed,
        num_generations=k,
        max_completion_length=profile.rollouts.max_new_tokens,
        temperature=profile.rollouts.temperature,
        top_p=profile.rollouts.top_p,
        beta=0.0,  # no KL, like the offline losses
    )
    args["per_device_train_batch_size"] = max(k, t.batch_size // k * k)  # whole groups per device
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[correctness],
        args=GRPOConfig(**args),
        train_dataset=Dataset.from_list(list(prompts.values())),
        processing_class=tokenizer,
    )
    _progress_to_terminal(trainer, f"online_grpo (seed {profile.train.seed})")
    start = time.time()
    try:
        trainer.train()
    except BaseException:
        if state.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta = {
        "method": "grpo",
        "control": "online_grpo",
        "profile": profile.name,
        "profile_file": profile_source(profile),
        "lr": t.lr,
        "steps": trainer.state.global_step,
        "seconds": time.time() - start,
        "prompts": len(prompts),
        "num_generations": k,
        "processes": state.num_processes,
        "base_dir": str(base_dir),
        "init_dir": str(init_dir),
    }
    if state.is_main_process:
        _finish(
            tmp, out_dir, trainer.accelerator.unwrap_model(trainer.model), trainer.state.log_history, meta
        )
    state.wait_for_everyone()
    return out_dir


if __name__ == "__main__":  # `python -m helpers.train`: the command line lives in helpers.train_cli
    from helpers.train_cli import main

    main()
