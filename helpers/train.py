"""The one training entry point for every method and control.

    python -m helpers.train --profile P --method M [--control C] [--base DIR] [--rollouts FILE]
                            [--out DIR] [--init DIR] [--debug]

also under `accelerate launch` (e.g. `accelerate launch --cpu --num_processes 2 -m helpers.train ...`).
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

import argparse
import dataclasses
import hashlib
import json
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

from helpers.cache import (
    atomic_write_json,
    cached_stage,
    publish,
    read_json,
    remove_stale,
    replace_folder,
    runs_root,
    scratch_path,
    stable_hash,
)
from helpers.checkpoints import StepAdapters
from helpers.cli import add_debug_flag, reports_errors
from helpers.losses import BLOCKS, REFERENCE_COLUMNS, loss_hparams
from helpers.method_data import METHOD_NAMES, build_method_dataset, load_rollouts
from helpers.profiles import Profile, load_profile, profile_source
from helpers.seeding import seed_everything
from helpers.trainer import (
    LAST_GOOD_MARKERS,
    MethodCollator,
    MethodTrainer,
    TrainingDiverged,
    reference_logps,
    tokenize_dataset,
)
from helpers.trainer import training_log as _training_log

__all__ = ["CONTROLS", "TrainingDiverged", "make_lora_init", "train_method", "main"]

# Each control is a variant of one method.
CONTROLS = {"sft_order": "sft", "sft_seed": "sft", "dpo_samelr": "dpo", "online_grpo": "grpo"}
REF_LOGPS_VERSION = 2  # 2: rows whose prompt exceeds max_length are dropped, not cut
# What makes a folder one of ours to replace: an adapter written by `_finish`.
ADAPTER_MARKERS = ("train_meta.json", "adapter_config.json")


class TrainConfigError(ValueError):
    """A method/control/path combination that cannot be trained; the message says which argument."""


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


def _fingerprint(base_dir: str | os.PathLike) -> dict[str, Any]:
    """What identifies a base model cheaply: its config and the names and sizes of its weight files."""
    path = Path(base_dir)
    if not path.is_dir():
        return {"hub_id": str(base_dir)}
    files = sorted((p.name, p.stat().st_size) for p in path.glob("*.safetensors"))
    config = (path / "config.json").read_text() if (path / "config.json").exists() else ""
    return {"path": str(path.resolve()), "files": files, "config": stable_hash(config)}


def _data_hash(ds: Dataset, columns: tuple[str, ...]) -> str:
    """sha256 over the given text columns, row by row."""
    digest = hashlib.sha256()
    for row in ds.select_columns(list(columns)):
        digest.update(json.dumps([row[c] for c in columns]).encode())
    return digest.hexdigest()[:16]


TOKENIZER_FILES = (
    "tokenizer*",
    "vocab*",
    "merges*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
)


def _tokenizer_fingerprint(tokenizer: Any, base_dir: str | os.PathLike) -> dict[str, Any]:
    """What decides the token ids: the content of the tokenizer's files, its vocabulary and its chat template."""
    path = Path(base_dir)
    files = {}
    if path.is_dir():
        for pattern in TOKENIZER_FILES:
            for file in sorted(path.glob(pattern)):
                files[file.name] = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return {
        "files": files,
        "vocab": stable_hash(vocab),
        "chat_template": stable_hash(getattr(tokenizer, "chat_template", None) or ""),
        "special": [tokenizer.eos_token_id, tokenizer.pad_token_id],
    }


def _cached_reference_logps(
    profile: Profile,
    base_dir: str | os.PathLike,
    model: PeftModel,
    tokenizer: Any,
    ds: Dataset,
    collator: MethodCollator,
    root: Path,
    method: str = "dpo",
) -> dict[str, list[float]]:
    """Reference log-probs (DPO's, or those of REFERENCE_COLUMNS[method]), once per (base, tokenizer, data), cached."""
    names = REFERENCE_COLUMNS[method]
    inputs = {
        "v": REF_LOGPS_VERSION,
        "base": _fingerprint(base_dir),
        "tokenizer": _tokenizer_fingerprint(tokenizer, base_dir),
        "data": _data_hash(ds, ("prompt", *BLOCKS[method])),
        "max_length": profile.model.max_length,
        "dtype": profile.model.dtype,
    }
    if names != REFERENCE_COLUMNS["dpo"]:  # DPO's key unchanged, so its cached pass stays valid
        inputs["columns"] = list(names)
    state = PartialState()

    def build(folder: Path) -> None:
        ref = reference_logps(model, ds, collator, profile.train.batch_size, state.device, names)
        atomic_write_json(folder / "ref_logps.json", ref)

    with state.main_process_first():
        folder = cached_stage("dpo_ref_logps", inputs, build, root=root)
    return read_json(folder / "ref_logps.json")


def _resolve(profile: Profile, method: str, control: str | None) -> tuple[float, int]:
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


def check_out_dir(out_dir: str | os.PathLike, flag: str = "--out", markers: tuple = ADAPTER_MARKERS) -> None:
    """Refuse an existing `out_dir` unless it is empty or a folder this program wrote (holds `markers`).

    Called before any work, and again just before the finished adapter replaces it.
    """
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise TrainConfigError(f"{flag} {out_dir} is a file, not a folder")
    if not any(out_dir.iterdir()) or all((out_dir / m).is_file() for m in markers):
        return
    raise TrainConfigError(
        f"{flag} {out_dir} is a non-empty folder that this program did not write (it lacks "
        f"{' and '.join(markers)}); refusing to replace it: pass a new or empty folder"
    )


def last_good_path(out_dir: str | os.PathLike) -> Path:
    """Where a diverged run keeps its last finite adapter: beside out_dir, never inside it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f"{out_dir.name}.last_good")


def _fresh_tmp(out_dir: Path, state: PartialState) -> Path:
    """An empty sibling folder to train into, unique to this run (host, pid), renamed to out_dir at the end.

    The main process names and makes it (after removing those of dead runs); the other
    processes of a launch receive its name.
    """
    tmp = None
    if state.is_main_process:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out_dir.parent)
        tmp = scratch_path(out_dir)
        tmp.mkdir()
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        tmp = broadcast_object_list([tmp])[0]
    state.wait_for_everyone()
    return Path(tmp)


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
    lr, data_seed = _resolve(profile, method, control)
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


@reports_errors
def main(argv: list[str] | None = None) -> Path:
    """Command line: train one method (or control) of a profile.

    Every argument and the profile are checked before any stage is built or loaded.
    """
    parser = argparse.ArgumentParser(prog="python -m helpers.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help="smoke | tiny | paper | path to a profile .yaml")
    parser.add_argument(
        "--method", required=True, choices=METHOD_NAMES, metavar="METHOD", help=" ".join(METHOD_NAMES)
    )
    parser.add_argument("--control", choices=sorted(CONTROLS), default=None)
    parser.add_argument("--base", help="base model folder or hub id (default: the profile's student)")
    parser.add_argument("--rollouts", help="graded rollouts jsonl (default: the profile's rollouts stage)")
    parser.add_argument("--out", help="output folder (default: <runs>/<profile>/train-<method>[-<control>])")
    parser.add_argument("--init", help="shared LoRA init folder (default: the profile's lora_init-<hash>)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    _resolve(profile, args.method, args.control)
    root = runs_root() / profile.name
    name = f"train-{args.method}" + (f"-{args.control}" if args.control else "")
    out = Path(args.out) if args.out else root / name
    check_out_dir(out)
    check_out_dir(last_good_path(out), "last_good", LAST_GOOD_MARKERS)
    if args.base and args.base.startswith(("/", ".", "~")) and not Path(args.base).expanduser().is_dir():
        raise TrainConfigError(f"--base {args.base} is not a folder (give a model folder or a hub id)")
    if args.init:
        check_out_dir(args.init, "--init", ("adapter_config.json",))
    if args.rollouts and args.control == "online_grpo":
        load_rollouts(args.rollouts)  # names the file, line and field of a bad record
    elif args.rollouts:
        build_method_dataset(args.rollouts, args.method, profile.train, seed=profile.train.seed)
    from helpers import pipeline

    pipeline.configure_environment(profile)
    # Missing inputs come from the pipeline's cached stages (built once, by the main process).
    with PartialState().main_process_first():
        base = args.base or pipeline.student_dir(profile)
        rollouts = args.rollouts or str(pipeline.rollouts_stage(profile) / "rollouts.jsonl")
    init = Path(args.init) if args.init else pipeline.lora_init_dir(profile)
    result = train_method(profile, args.method, base, rollouts, out, init, control=args.control)
    if PartialState().is_main_process:
        print(f"adapter saved to {result}")
    return result


if __name__ == "__main__":
    main()
