"""The profile's dataclass tree: every knob of a run, with its type and default.

helpers.profiles loads and checks these from YAML (every profile states every knob) and
re-exports them; import them from there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

METHODS = ("sft", "rft", "dft", "rift", "grpo", "dpo")
VARIANTS = ("rift_paper", "grpo_paper")
CONTRASTIVE = ("ipo", "dpo_norm", "simpo", "kto")  # chapter 08; in no default `train.methods`


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
