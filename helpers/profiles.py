"""Run profiles: one dataclass tree (helpers.profile_schema), loaded from YAML under data/profiles/.

Only the profile changes between scales (smoke, tiny, paper); every stage reads its
knobs from here, so the code path is the same on a laptop and on a GPU cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .profile_schema import (  # noqa: F401 (re-exported: the dataclasses are imported from here)
    CONTRASTIVE,
    METHODS,
    VARIANTS,
    AnalysisConfig,
    DataConfig,
    LoraConfig,
    ModelConfig,
    Profile,
    RolloutConfig,
    TrainConfig,
)

PROFILE_DIR = Path(__file__).resolve().parent.parent / "data" / "profiles"


class ProfileError(ValueError):
    """A profile that cannot be loaded; the message names the file and the field."""


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
