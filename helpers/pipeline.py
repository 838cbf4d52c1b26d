"""The book's stages, each cached in a run folder keyed by a hash of its inputs.

profile -> problems -> base models -> rollouts -> (training, analyses: later stages).
Every stage function returns the finished folder; a rerun with the same inputs reuses
it, a changed knob rebuilds only what depends on it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .cache import (
    atomic_write_json,
    atomic_write_jsonl,
    cached_stage,
    file_key,
    is_done,
    read_json,
    read_jsonl,
    runs_root,
    stable_hash,
    stage_folder,
)
from .data_keys import data_file_keys
from .data_keys import data_inputs as _data_inputs
from .data_keys import source_file as _source_file
from .profile_table import profile_table  # noqa: F401 (chapter 00 imports it from here)
from .profiles import Profile
from .replicates import replicate_profile, replicate_run_names

# Bump when a stage's code changes what it writes, so old run folders are not reused.
STAGE_VERSIONS = {"problems": 1, "base": 2, "rollouts": 1, "adapter": 2, "evaluation": 1}
CURVE_PROBLEMS = 64  # held-out problems per probe


def configure_environment(profile: Profile) -> None:
    """CPU profiles never touch the hub; the paper profile may."""
    if profile.model.student == "tiny":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_root(profile: Profile) -> Path:
    """Folder of this profile's stages."""
    return runs_root() / profile.name


def resolve_device(profile: Profile) -> str:
    """`auto` means CUDA when present."""
    import torch

    if profile.model.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return profile.model.device


# --- stage 1: problems -------------------------------------------------------------


def _problems_inputs(profile: Profile) -> dict[str, Any]:
    return {
        "v": STAGE_VERSIONS["problems"],
        "data": _data_inputs(profile),
        "files": data_file_keys(profile),
        "pretrain_problems": profile.model.pretrain_problems,
        "student": profile.model.student,
    }


def problems_stage(profile: Profile) -> Path:
    """Prompts for rollouts (train), held-out problems (eval), and the pretraining corpus."""
    from .data import load_problems
    from .evaluate import load_eval_set

    d = profile.data

    def build(tmp: Path) -> None:
        common = {
            "seed": d.seed,
            "min_steps": d.min_steps,
            "max_steps": d.max_steps,
            "max_result": d.max_result,
        }
        train = load_problems(d.train_source, "train", n=d.n_train_prompts, path=d.train_path, **common)
        atomic_write_jsonl(tmp / "train.jsonl", train)
        atomic_write_jsonl(tmp / "eval.jsonl", load_eval_set(profile))
        if profile.model.student == "tiny":
            # A separate seed: the corpus the models learn from is not the prompt set itself.
            corpus = load_problems(
                "generated", "train", n=profile.model.pretrain_problems, **{**common, "seed": d.seed + 1}
            )
            atomic_write_jsonl(tmp / "pretrain.jsonl", corpus)

    return cached_stage("problems", _problems_inputs(profile), build, run_root(profile))


# --- stage 2: base models ----------------------------------------------------------


def source_base_inputs(profile: Profile) -> dict[str, Any]:
    """What pretraining the base reads: the key a shipped base's manifest records."""
    return {
        "v": STAGE_VERSIONS["base"],
        "problems": _problems_inputs(profile),
        "model": profile.to_dict()["model"],
        "seed": profile.seed,
    }


def _shipped_base(profile: Profile) -> Path | None:
    from .base_release import shipped_for

    if profile.model.student != "tiny":
        return None
    return shipped_for(profile.name, stable_hash(source_base_inputs(profile)))


def _base_inputs(profile: Profile) -> dict[str, Any]:
    # A shipped base adds its manifest's hash, so a base pretrained locally (an older clone)
    # and the shipped one never share a folder, nor do the stages built on them.
    inputs = source_base_inputs(profile)
    shipped = _shipped_base(profile)
    if shipped is not None:
        from .base_release import manifest_sha

        inputs["shipped"] = manifest_sha(shipped)
    return inputs


def pretrain_base(profile: Profile, out: Path) -> None:
    """Write the base stage's files into `out`: pretrain the tiny models, or record the hub ids."""
    m = profile.model
    if m.student != "tiny":
        atomic_write_json(out / "base.json", {"student": m.student, "teacher": m.teacher})
        return
    from .base_models import build_tiny_base, saved_model_accuracy

    problems_dir = problems_stage(profile)
    build_tiny_base(
        profile,
        read_jsonl(problems_dir / "pretrain.jsonl"),
        read_jsonl(problems_dir / "eval.jsonl")[:CURVE_PROBLEMS],
        out,
        score=lambda folder, problems, sampled: saved_model_accuracy(
            folder, problems, profile, sampled, resolve_device(profile)
        ),
        device=resolve_device(profile),
    )


def base_stage(profile: Profile) -> Path:
    """The tiny student and teacher: tokenizer, pretraining, and accuracy along the way.

    When `data/base/<profile>` ships a base built from these very inputs it is verified
    (sha256 of every file) and copied instead. For hub models the folder only records the ids.
    """
    problems_stage(profile)
    shipped = _shipped_base(profile)

    def build(tmp: Path) -> None:
        if shipped is not None:
            from .base_release import copy_shipped

            copy_shipped(shipped, tmp)
        else:
            pretrain_base(profile, tmp)

    return cached_stage("base", _base_inputs(profile), build, run_root(profile))


def student_dir(profile: Profile) -> str:
    """Path (tiny) or hub id (paper) of the student model."""
    folder = base_stage(profile)
    return str(folder / "student") if profile.model.student == "tiny" else profile.model.student


def teacher_ref(profile: Profile) -> str:
    """Path, hub id, or oracle spec of the teacher."""
    folder = base_stage(profile)
    if profile.model.teacher == "tiny":
        return str(folder / "teacher")
    return profile.model.teacher


# --- stage 3: rollouts -------------------------------------------------------------


def _rollout_inputs(profile: Profile) -> dict[str, Any]:
    rollouts_file = profile.model.rollouts_file or None
    return {
        "v": STAGE_VERSIONS["rollouts"],
        "base": _base_inputs(profile),
        "rollouts": profile.to_dict()["rollouts"],
        "file": rollouts_file,
        "file_hash": file_key(rollouts_file),
    }


def rollouts_stage(profile: Profile) -> Path:
    """K graded teacher completions per training prompt, and their summary."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .rollouts import (
        grade,
        oracle_completions,
        prompts_for,
        read_rollouts,
        sample_rollouts,
        summarize,
        write_rollouts,
    )

    r = profile.rollouts
    problems = read_jsonl(problems_stage(profile) / "train.jsonl")
    student = student_dir(profile)
    teacher = teacher_ref(profile)

    def build(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(student)
        prompts = prompts_for(problems, tokenizer)
        if profile.model.rollouts_file:
            records = read_rollouts(profile.model.rollouts_file)
        elif teacher.startswith("oracle:"):
            samples = oracle_completions(problems, r.k, float(teacher.split(":", 1)[1]), profile.seed)
            records = grade(problems, prompts, samples, r.k)
        else:
            from .seeding import seed_everything

            seed_everything(profile.seed)
            model = AutoModelForCausalLM.from_pretrained(teacher).to(resolve_device(profile))
            samples = sample_rollouts(model, tokenizer, prompts, r, profile.seed, desc="teacher rollouts")
            records = grade(problems, prompts, samples, r.k)
        write_rollouts(records, tmp / "rollouts.jsonl")
        atomic_write_json(tmp / "summary.json", summarize(records))

    return cached_stage("rollouts", _rollout_inputs(profile), build, run_root(profile))


def load_summary(folder: Path) -> dict:
    """The summary JSON of a rollouts stage."""
    return read_json(folder / "summary.json")


# --- stage 4: one adapter per method and control -----------------------------------


def _lora_inputs(profile: Profile) -> dict[str, Any]:
    return {"base": _base_inputs(profile), "lora": profile.to_dict()["lora"]}


def train_inputs(profile: Profile) -> dict[str, Any]:
    """The training knobs one run depends on: not which other runs the profile lists, nor how many
    replicates it makes, so adding a method or a replicate never retrains the others."""
    train = profile.to_dict()["train"]
    for key in ("methods", "controls", "replicates"):
        train.pop(key)
    return train


def lora_init_dir(profile: Profile) -> Path:
    """The one shared LoRA initialisation of this profile's student (built on first use)."""
    return run_root(profile) / f"lora_init-{stable_hash(_lora_inputs(profile))}"


def split_run_name(name: str) -> tuple[str, str | None]:
    """`sft_order` -> ("sft", "sft_order"); a plain method -> (method, None)."""
    from .train import CONTROLS

    return (CONTROLS[name], name) if name in CONTROLS else (name, None)


def run_names(profile: Profile, replicate: int = 0) -> list[str]:
    """Every adapter replicate `replicate` trains: the methods, then its controls
    (helpers.replicates.replicate_run_names: replicate 0 trains every control)."""
    return replicate_run_names(profile, replicate)


def _adapter_inputs(profile: Profile, name: str) -> dict[str, Any]:
    return {
        "v": STAGE_VERSIONS["adapter"],
        "rollouts": _rollout_inputs(profile),
        "lora": _lora_inputs(profile),
        "train": train_inputs(profile),
        "name": name,
    }


def adapter_done(profile: Profile, name: str) -> bool:
    """Whether the adapter stage of run `name` is already built (nothing is built here)."""
    return is_done(stage_folder(f"adapter-{name}", _adapter_inputs(profile, name), run_root(profile)))


def adapter_stage(profile: Profile, name: str) -> Path:
    """Train one method or control from the shared init; returns its adapter at `train.result_step`.

    `profile` is the replicate's own (helpers.replicates.replicate_profile). The adapters kept
    at `train.save_steps` are inside it (helpers.checkpoints); `adapter_at` finds them.
    """
    from .train import last_good_path, train_method

    method, control = split_run_name(name)
    rollouts = rollouts_stage(profile) / "rollouts.jsonl"
    student = student_dir(profile)
    inputs = _adapter_inputs(profile, name)

    # Beside the stage, not in its temporary folder: a diverged run's last finite weights outlive it.
    last_good = last_good_path(stage_folder(f"adapter-{name}", inputs, run_root(profile)))

    def build(tmp: Path) -> None:
        from .seeding import seed_everything

        seed_everything(profile.train.seed)
        train_method(
            profile,
            method,
            student,
            rollouts,
            tmp / "adapter",
            lora_init_dir(profile),
            control=control,
            last_good_dir=last_good,
        )

    return cached_stage(f"adapter-{name}", inputs, build, run_root(profile)) / "adapter"


def adapter_at(profile: Profile, name: str, step: int, replicate: int = 0) -> Path:
    """The adapter of one run of a replicate at a kept step (`train.result_step` or one of `train.save_steps`)."""
    from .checkpoints import adapter_at_step

    t = profile.train
    if name == "online_grpo":
        raise ValueError("online_grpo keeps only its final adapter (adapter_stage); it has no trajectory")
    if step not in t.kept_steps():
        raise ValueError(
            f"step {step} is not kept by profile {profile.name}: train.save_steps + result_step = {list(t.kept_steps())}"
        )
    return adapter_at_step(adapter_stage(replicate_profile(profile, replicate), name), step, t.result_step)


def adapters(profile: Profile, names: list[str] | None = None, replicate: int = 0) -> dict[str, Path]:
    """Adapter folders of several runs of one replicate, training the missing ones here, in order
    (helpers.parallel.replicate_adapters trains every replicate's runs concurrently)."""
    own = replicate_profile(profile, replicate)
    return {name: adapter_stage(own, name) for name in (names or run_names(profile, replicate))}


# --- stage 5: evaluation -----------------------------------------------------------


def _evaluation_inputs(
    profile: Profile, runs: dict[str, Path], source: str | None, path: str | None
) -> dict[str, Any]:
    a = profile.analysis
    return {
        "v": STAGE_VERSIONS["evaluation"],
        "runs": {n: str(p) for n, p in runs.items()},
        "data": _data_inputs(profile),
        "files": data_file_keys(profile),
        "source": source,
        # the file's content, not its name: an edited set is scored again
        "source_file": file_key(path if path is not None else source and _source_file(source, "test")),
        "max_new_tokens": a.eval_max_new_tokens,
        "base": _base_inputs(profile),
    }


def evaluation_done(
    profile: Profile, runs: dict[str, Path], source: str | None = None, path: str | None = None
) -> bool:
    """Whether the evaluation stage of these runs (one replicate's) is built (nothing is built here)."""
    return is_done(
        stage_folder("evaluation", _evaluation_inputs(profile, runs, source, path), run_root(profile))
    )


def evaluation_stage(
    profile: Profile,
    names: list[str] | None = None,
    source: str | None = None,
    path: str | None = None,
    replicate: int = 0,
) -> dict[str, dict]:
    """Greedy evaluation of the base and every run of a replicate on the held-out set (or another
    jsonl), cached; each model's result comes from its own stage (helpers.eval_stages), so the base
    is evaluated once for all replicates (eval_stages.evaluation_stages: all replicates concurrently)."""
    import shutil

    from .eval_stages import RESULT, model_evaluation_stage

    runs = adapters(profile, names, replicate)
    inputs = _evaluation_inputs(profile, runs, source, path)

    def build(tmp: Path) -> None:
        for name, adapter in {"base": None, **runs}.items():
            shutil.copyfile(
                model_evaluation_stage(profile, adapter, source, path, name) / RESULT, tmp / f"{name}.json"
            )

    folder = cached_stage("evaluation", inputs, build, run_root(profile))
    return {name: read_json(folder / f"{name}.json") for name in ["base", *runs]}
