"""The adapters a training run keeps along its schedule, and where they live.

A run trains for `train.steps` (the learning-rate schedule's length) and keeps the
adapter at every step of `train.save_steps` and at `train.result_step`. Run folder:

    <run>/                       the adapter at result_step: the one every analysis reads
        adapter_config.json      (PEFT format, with training_log.json and train_meta.json)
        adapter_model.safetensors
        steps/step-000250/       the adapter at each other step of save_steps (PEFT format,
            step.json            with the step and the training rows seen by then)

When result_step < steps, training goes on to the end of the schedule and the
result_step weights are put back before the run folder is written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from transformers import TrainerCallback

from helpers.cache import atomic_write_json

STEPS_DIR = "steps"


def step_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """Folder of the adapter kept at `step` (other than result_step) inside a run folder."""
    return Path(run_dir) / STEPS_DIR / f"step-{step:06d}"


def adapter_at_step(run_dir: str | os.PathLike, step: int, result_step: int) -> Path:
    """The adapter folder of a run at `step`: the run folder itself at result_step, else steps/step-NNNNNN."""
    run_dir = Path(run_dir)
    folder = run_dir if step == result_step else step_dir(run_dir, step)
    if not (folder / "adapter_config.json").exists():
        kept = sorted(int(p.name.split("-")[1]) for p in (run_dir / STEPS_DIR).glob("step-*"))
        raise FileNotFoundError(
            f"{run_dir} keeps no adapter at step {step}; it has step(s) {sorted({*kept, result_step})} "
            "(add the step to train.save_steps and train again)"
        )
    return folder


def save_adapter(model: Any, folder: Path, info: dict) -> None:
    """Save a PEFT adapter (and `info` as step.json) through a temporary sibling renamed into place."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    atomic_write_json(tmp / "step.json", info)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


class StepAdapters(TrainerCallback):
    """Keeps the adapter at each of `save_steps` on disk, and the result_step weights in memory.

    `rows_seen()` is called on every process at each kept step (it may reduce across
    processes); only the main process writes.
    """

    def __init__(
        self,
        run_dir: Path,
        save_steps: Sequence[int],
        result_step: int,
        rows_seen: Callable[[], int],
        is_main_process: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.save_steps = set(save_steps) - {result_step}
        self.result_step = result_step
        self.rows_seen = rows_seen
        self.is_main_process = is_main_process
        self.result_weights: dict[str, torch.Tensor] | None = None
        self.rows_at: dict[int, int] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step != self.result_step and step not in self.save_steps:
            return
        self.rows_at[step] = self.rows_seen()
        if step == self.result_step:
            weights = get_peft_model_state_dict(model)
            self.result_weights = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
        elif self.is_main_process:
            save_adapter(model, step_dir(self.run_dir, step), {"step": step, "rows_seen": self.rows_at[step]})

    def restore_result(self, model: Any, final_step: int) -> None:
        """Put the result_step weights back into `model` (a no-op when training ended there)."""
        if self.result_weights is None:
            raise RuntimeError(
                f"training stopped at step {final_step}, before result_step {self.result_step}"
            )
        if final_step != self.result_step:
            set_peft_model_state_dict(model, self.result_weights)
