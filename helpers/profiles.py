"""Run profiles: one dataclass tree, loaded from YAML under data/profiles/.

Only the profile changes between scales (smoke, tiny, paper); every stage reads its
knobs from here, so the code path is the same on a laptop and on a GPU cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

PROFILE_DIR = Path(__file__).resolve().parent.parent / "data" / "profiles"
METHODS = ("sft", "rft", "dft", "rift", "grpo", "dpo")
VARIANTS = ("rift_paper", "grpo_paper")
CONTRASTIVE = ("ipo", "dpo_norm", "simpo", "kto")  # chapter 08; in no default `train.methods`


class ProfileError(ValueError):
    """A profile that cannot be loaded; the message names the file and the field."""


@dataclass(frozen=True)
class ModelConfig:
    """The student (trained) and the teacher (writes the rollouts)."""

    student: str = "tiny"  # "tiny" builds one; otherwise a hub id or local path
    teacher: str = "tiny"  # "tiny" builds a stronger tiny model; a hub id; or "file"
    rollouts_file: str | None = None  # jsonl of graded rollouts the user brings
    # Architecture of the tiny models (ignored for hub models).
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    vocab_size: int = 512
    max_length: int = 256
    # Pretraining of the tiny student and teacher on generated problems.
    pretrain_problems: int = 20000
    pretrain_batch: int = 32
    pretrain_lr: float = 3e-3
    student_steps: int = 400  # earliest checkpoint that may become the student
    student_accuracy: float = (
        0.5  # the student: first checkpoint whose greedy accuracy reaches this (0: fixed)
    )
    teacher_steps: int = 900
    teacher_hidden_size: int = 128
    accuracy_probes: int = 6  # checkpoints scored along each pretraining run
    dtype: str = "float32"  # float32 | bfloat16
    device: str = "auto"  # auto | cpu | cuda


@dataclass(frozen=True)
class DataConfig:
    """Where the prompts come from and how many."""

    train_source: str = "generated"  # generated | gsm8k | a hub id
    eval_source: str = "generated"  # generated | gsm8k | path to a jsonl
    train_path: str | None = None  # local jsonl for train_source
    eval_path: str | None = None  # local jsonl for eval_source
    # More held-out sets scored in chapter 06 (e.g. the study's AIME 2026): local jsonl files of
    # question/answer pairs, relative to the repository root unless absolute.
    extra_eval_paths: tuple[str, ...] = ()
    n_train_prompts: int = 512
    n_eval_problems: int = 256
    min_steps: int = 2
    max_steps: int = 4
    max_result: int = 999  # largest number in a generated problem (difficulty for a small model)
    seed: int = 1234


@dataclass(frozen=True)
class RolloutConfig:
    """K sampled completions per prompt, graded by the answer checker."""

    k: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 160
    batch_size: int = 64


@dataclass(frozen=True)
class LoraConfig:
    """Attention-only LoRA, one shared initialisation for every method."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    init_seed: int = 42


@dataclass(frozen=True)
class TrainConfig:
    """The one protocol every method shares; only the loss (and DPO's lr) differ."""

    methods: tuple[str, ...] = METHODS + VARIANTS
    lr: float = 1e-3
    lr_overrides: dict[str, float] = field(default_factory=lambda: {"dpo": 3e-5})
    steps: int = 200  # optimiser steps; the learning-rate schedule runs over all of them
    result_step: int = 200  # the step whose adapter every analysis reads (the study: 1000 of 1500)
    save_steps: tuple[int, ...] = ()  # further steps whose adapters are kept (for trajectories)
    replicates: int = 1  # complete copies of the design, each with its own init and data-order seed
    batch_size: int = 32
    grad_accum: int = 1
    scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    beta: float = 0.1  # DPO temperature
    rift_pos_reward: float = 1.0
    rift_neg_reward: float = -0.2
    rift_lambda: float = 0.5  # rift_paper's (1 - r*lambda); the study gives no value
    grpo_bonus: float = 0.1  # grpo_paper's A = r - mean + 0.1
    dpo_pairs_per_prompt: int = 1  # (correct, incorrect) pairs drawn per mixed prompt group, by seed
    dpo_max_pairs: int = 0  # cap on DPO's pairs after drawing (0: no cap); the study used about 1.8k
    controls: tuple[str, ...] = ("sft_order", "sft_seed", "dpo_samelr", "online_grpo")
    online_grpo_steps: int = 40
    log_every: int = 5
    bf16: bool = False

    def lr_for(self, method: str) -> float:
        """Peak learning rate of a method: the shared one unless overridden."""
        return float(self.lr_overrides.get(method, self.lr))

    def kept_steps(self) -> tuple[int, ...]:
        """Every step whose adapter a run keeps: save_steps and result_step, ascending."""
        return tuple(sorted({*self.save_steps, self.result_step}))

    def step_errors(self) -> list[str]:
        """What is wrong with steps / result_step / save_steps / replicates / DPO pairs (empty: fine)."""
        errors = []
        if not 1 <= self.result_step <= self.steps:
            errors.append(
                f"`train.result_step` ({self.result_step}) must be within 1..train.steps ({self.steps})"
            )
        outside = [s for s in self.save_steps if not 1 <= s <= self.steps]
        if outside:
            errors.append(f"`train.save_steps` {outside} must be within 1..train.steps ({self.steps})")
        if self.replicates < 1:
            errors.append(f"`train.replicates` ({self.replicates}) must be at least 1")
        if self.dpo_pairs_per_prompt < 1:
            errors.append(f"`train.dpo_pairs_per_prompt` ({self.dpo_pairs_per_prompt}) must be at least 1")
        if self.dpo_max_pairs < 0:
            errors.append(f"`train.dpo_max_pairs` ({self.dpo_max_pairs}) must be 0 (no cap) or positive")
        return errors


@dataclass(frozen=True)
class AnalysisConfig:
    """Knobs of the geometry, connectivity, CKA and evaluation chapters."""

    principal_k: int = 10
    lmc_points: int = 11
    lmc_problems: int = 64
    cka_prompts: int = 100
    eval_batch_size: int = 64
    eval_max_new_tokens: int = 160
    base_subspace_k: int = 0  # >0 computes the "path not taken" overlap


@dataclass(frozen=True)
class Profile:
    """Everything that changes between smoke, tiny and paper runs."""

    name: str
    description: str = ""
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollouts: RolloutConfig = field(default_factory=RolloutConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for hashing and for the run folder's profile.json)."""
        return dataclasses.asdict(self)


def available_profiles() -> list[str]:
    """Names of the profiles shipped under data/profiles/."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _build(cls: type, raw: Any, where: str, source: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting missing and unknown keys."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{source}: `{where or 'top level'}` must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        keys = ", ".join(f"{where}.{k}".lstrip(".") for k in unknown)
        raise ProfileError(f"{source}: unknown key(s) {keys}; allowed: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}.{name}".lstrip(".")
        if name not in raw:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required or dataclasses.is_dataclass(hints[name]):
                raise ProfileError(f"{source}: missing key `{key}`")
            raise ProfileError(f"{source}: missing key `{key}` (every profile states every knob)")
        values[name] = _coerce(hints[name], raw[name], key, source)
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    """Check and convert one YAML value to the field's declared type."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source)
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise ProfileError(f"{source}: `{key}` must not be empty")
    try:
        if text.startswith("tuple"):
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise TypeError("expected a list")
            if text.startswith("tuple[int"):
                if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
                    raise TypeError("expected a list of integers")
                return tuple(value)
            return tuple(str(v) for v in value)
        if text.startswith("dict"):
            if not isinstance(value, dict):
                raise TypeError("expected a mapping")
            bad = {k: v for k, v in value.items() if isinstance(v, bool) or not isinstance(v, int | float)}
            if bad or not all(math.isfinite(v) for v in value.values()):
                raise TypeError(f"expected finite numbers as values, got {bad or value}")
            return {str(k): float(v) for k, v in value.items()}
        if hint is bool or text == "bool":
            if not isinstance(value, bool):
                raise TypeError("expected true or false")
            return value
        if hint is int or text == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError("expected an integer")
            return value
        if hint is float or text == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError("expected a number")
            if not math.isfinite(value):
                raise ValueError("expected a finite number")
            return float(value)
        return str(value)
    except (TypeError, ValueError) as err:
        raise ProfileError(f"{source}: `{key}` has a bad value {value!r}: {err}") from None


# transformers' SchedulerType values that need no extra arguments.
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)


def _each(section: str, names: str, ok: Any, need: str) -> tuple[tuple[str, Any, str], ...]:
    return tuple((f"{section}.{name}".lstrip("."), ok, need) for name in names.split())


def _at_least(low: int) -> Any:
    return lambda v: v >= low


_POSITIVE = (lambda v: v > 0, "must be > 0")
_COUNT = (_at_least(1), "must be at least 1")
_NON_NEGATIVE = (_at_least(0), "must be >= 0")
_FRACTION = (lambda v: 0 <= v < 1, "must be in [0, 1)")
# Checked only when the student is "tiny": hub models ignore these (the paper profile sets 0).
_TINY_RANGES: tuple[tuple[str, Any, str], ...] = (
    *_each(
        "model",
        "hidden_size num_layers num_heads num_kv_heads head_dim intermediate_size vocab_size "
        "pretrain_problems pretrain_batch teacher_hidden_size",
        *_COUNT,
    ),
    *_each("model", "pretrain_lr", *_POSITIVE),
)
# (field, test, what it must be): the ranges a type check cannot make.
_RANGES: tuple[tuple[str, Any, str], ...] = (
    *_each("", "seed", *_NON_NEGATIVE),
    *_each("model", "max_length", *_COUNT),
    *_each("model", "student_steps teacher_steps accuracy_probes", *_NON_NEGATIVE),
    *_each("model", "student_accuracy", lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    *_each("model", "dtype", lambda v: v in ("float32", "bfloat16"), "must be float32 or bfloat16"),
    *_each(
        "model",
        "device",
        lambda v: v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v),
        "must be auto, cpu, cuda or cuda:N",
    ),
    *_each("data", "n_train_prompts n_eval_problems min_steps max_result", *_COUNT),
    *_each("data", "seed", *_NON_NEGATIVE),
    *_each("rollouts", "k", _at_least(2), "must be at least 2 (groups need several rollouts)"),
    *_each("rollouts", "temperature", *_POSITIVE),
    *_each("rollouts", "top_p", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    *_each("rollouts", "max_new_tokens batch_size", *_COUNT),
    *_each("lora", "r", *_COUNT),
    *_each("lora", "alpha", *_POSITIVE),
    *_each("lora", "dropout", *_FRACTION),
    *_each("lora", "targets", bool, "must name at least one module"),
    *_each("lora", "init_seed", *_NON_NEGATIVE),
    *_each("train", "methods", bool, "must name at least one method"),
    *_each("train", "lr max_grad_norm beta", *_POSITIVE),
    *_each("train", "steps batch_size grad_accum online_grpo_steps log_every", *_COUNT),
    *_each("train", "warmup_ratio", *_FRACTION),
    *_each("train", "weight_decay seed", *_NON_NEGATIVE),
    *_each("train", "scheduler", lambda v: v in SCHEDULERS, f"must be one of {', '.join(SCHEDULERS)}"),
    *_each("analysis", "principal_k lmc_problems eval_batch_size eval_max_new_tokens", *_COUNT),
    *_each("analysis", "lmc_points cka_prompts", _at_least(2), "must be at least 2"),
    *_each("analysis", "base_subspace_k", *_NON_NEGATIVE),
)
CONTROL_NAMES = ("sft_order", "sft_seed", "dpo_samelr", "online_grpo")  # helpers.train.CONTROLS


def _get(profile: Profile, key: str) -> Any:
    value: Any = profile
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _validate(profile: Profile, source: str) -> None:
    """Value checks a type check cannot make: ranges, choices, cross-field; each names file and field."""
    tiny = profile.model.student == "tiny"
    for key, ok, need in _RANGES + (_TINY_RANGES if tiny else ()):
        value = _get(profile, key)
        if not ok(value):
            raise ProfileError(f"{source}: `{key}` {need}, got {value!r}")
    unknown = [m for m in profile.train.methods if m not in METHODS + VARIANTS + CONTRASTIVE]
    if unknown:
        raise ProfileError(f"{source}: `train.methods` has unknown method(s) {unknown}")
    unknown = [c for c in profile.train.controls if c not in CONTROL_NAMES]
    if unknown:
        raise ProfileError(
            f"{source}: `train.controls` has unknown control(s) {unknown}; allowed: {CONTROL_NAMES}"
        )
    for method, lr in profile.train.lr_overrides.items():
        if method not in METHODS + VARIANTS + CONTRASTIVE:
            raise ProfileError(
                f"{source}: `train.lr_overrides.{method}` is not a method; "
                f"allowed: {', '.join(METHODS + VARIANTS + CONTRASTIVE)}"
            )
        if lr <= 0:
            raise ProfileError(f"{source}: `train.lr_overrides.{method}` must be > 0, got {lr!r}")
    if profile.data.min_steps > profile.data.max_steps:
        raise ProfileError(f"{source}: `data.min_steps` exceeds `data.max_steps`")
    if tiny and profile.model.num_heads % profile.model.num_kv_heads:
        raise ProfileError(f"{source}: `model.num_heads` must be a multiple of `model.num_kv_heads`")
    _validate_train(profile, source)


def _validate_train(profile: Profile, source: str) -> None:
    """The schedule's steps (result_step, save_steps), replicates and the DPO pair knobs."""
    errors = profile.train.step_errors()
    if errors:
        raise ProfileError(f"{source}: " + "; ".join(errors))


def profile_source(profile: Profile) -> dict[str, str] | None:
    """The YAML file a profile was loaded from and the sha256 of its content at load time.

    None for a profile built or changed in code (dataclasses.replace): no file holds it.
    """
    return getattr(profile, "_source", None)


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """Load a profile by name (smoke, tiny, paper) or from a YAML path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ProfileError(
                f"unknown profile {str(name_or_path)!r}; available: {', '.join(available_profiles())} "
                "(or pass a path to a .yaml file)"
            )
    elif not path.exists():
        raise ProfileError(f"profile file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: not valid YAML: {err}") from None
    profile = _build(Profile, raw, "", str(path))
    _validate(profile, str(path))
    # Not a field: kept out of to_dict() and cache keys, and dropped by dataclasses.replace.
    source = {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    object.__setattr__(profile, "_source", source)
    return profile
