"""Build the tiny student and teacher: one tokenizer, one pretraining run, checkpoints picked by accuracy.

The teacher is the end of the run (trained longest). The student is an earlier
checkpoint that is partly right: the first probe, at or after `student_steps`, whose
greedy accuracy on held-out problems reaches `student_accuracy`. Picking by measured
accuracy rather than by a fixed step matters because a small model learns to copy
numbers out of the question abruptly, at a step that moves with the seed.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cache import atomic_write_json
from .profiles import Profile

Curve = dict[int, dict[str, float]]


def select_student(curve: Curve, final_step: int, min_step: int, target: float) -> tuple[int, str]:
    """The student's step from {step: {"greedy": acc, ...}} and why it was chosen.

    The first step >= min_step (before the teacher's final step) whose greedy accuracy
    reaches target; failing that, the most accurate such step. target 0 means min_step itself.
    """
    candidates = sorted(s for s in curve if min_step <= s < final_step)
    if not candidates:
        raise ValueError(f"no checkpoint between step {min_step} and the teacher's step {final_step}")
    if target <= 0:
        return candidates[0], f"fixed at step {candidates[0]}"
    for step in candidates:
        if curve[step]["greedy"] >= target:
            return step, f"first checkpoint with greedy accuracy >= {target:g}"
    best = max(candidates, key=lambda s: (curve[s]["greedy"], s))
    return best, f"no checkpoint reached {target:g}; the most accurate one before the teacher"


def saved_model_accuracy(
    model_dir: Path, problems: list[dict], profile: Profile, sampled: bool, device: str = "cpu"
) -> float:
    """Accuracy of a saved model on problems, one completion each: greedy, or sampled as the rollouts are."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .data import is_correct
    from .rollouts import prompts_for, sample_rollouts

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device)
    once = dataclasses.replace(
        profile.rollouts, k=1, temperature=profile.rollouts.temperature if sampled else 0.0
    )
    samples = sample_rollouts(
        model, tokenizer, prompts_for(problems, tokenizer), once, profile.seed, desc="score"
    )
    right = [is_correct(text, p["answer"]) for p, (text, _) in zip(problems, samples, strict=True)]
    return sum(map(bool, right)) / len(right) if right else 0.0


def build_tiny_base(
    profile: Profile,
    corpus: list[dict],
    held_out: list[dict],
    out: Path,
    score: Callable[[Path, list[dict], bool], float],
    device: str = "cpu",
) -> dict[str, Any]:
    """Pretrain and save `out/student` and (for a tiny teacher) `out/teacher`; return what was chosen.

    `score(model_dir, problems, sampled)` is the accuracy used to pick checkpoints.
    Writes pretrain_log.json, accuracy_curve.json and base.json into `out`.
    """
    from .problems import problem_corpus
    from .prompting import build_completion, build_prompt
    from .seeding import seed_everything
    from .tiny_model import build_model, count_parameters, pretrain, save_model, train_tokenizer

    m = profile.model
    seed_everything(profile.seed)
    tokenizer = train_tokenizer(problem_corpus(corpus), m.vocab_size)
    texts = [
        build_prompt(r["question"], tokenizer) + build_completion(r["solution"], tokenizer) for r in corpus
    ]
    shared = m.teacher == "tiny" and m.teacher_hidden_size == m.hidden_size
    runs = [("student+teacher", m.hidden_size, m.teacher_steps)] if shared else [
        ("student", m.hidden_size, m.student_steps),
        *([("teacher", m.teacher_hidden_size, m.teacher_steps)] if m.teacher == "tiny" else []),
    ]  # fmt: skip
    logs, curves, chosen = {}, {}, {}
    for name, hidden, steps in runs:
        every = max(1, steps // max(1, m.accuracy_probes))
        points = sorted(
            {*range(every, steps + 1, every), steps, *([m.student_steps] if m.student_steps else [])}
        )
        points = [s for s in points if 0 < s <= steps]
        folders = {s: out / f"probe-{name}-{s}" for s in points}
        model = build_model(m, len(tokenizer), hidden_size=hidden, seed=profile.seed)
        log = pretrain(
            model,
            tokenizer,
            texts,
            steps,
            m.pretrain_batch,
            m.pretrain_lr,
            m.max_length,
            seed=profile.seed,
            device=device,
            checkpoints=folders,
            desc=f"pretrain {name}",
        )
        if steps == 0:  # an untrained student (smoke tests of the plumbing)
            folders = {0: out / f"probe-{name}-0"}
            save_model(model, tokenizer, folders[0])
        logs[name] = {
            "steps": log.steps,
            "loss": log.loss,
            "seconds": log.seconds,
            "tokens": log.tokens,
            "tokens_per_second": log.tokens_per_second,
            "parameters": count_parameters(model),
            "hidden_size": hidden,
        }
        curve = {
            s: {mode: score(f, held_out, mode == "sampled") for mode in ("greedy", "sampled")}
            for s, f in sorted(folders.items())
        }
        curves[name] = {str(s): v for s, v in curve.items()}
        final = max(folders)
        if name in ("student+teacher", "teacher"):
            chosen["teacher"] = (name, final, "the end of the run")
        if name in ("student+teacher", "student"):
            limit = final if name == "student+teacher" else final + 1
            step, why = select_student(curve, limit, m.student_steps, m.student_accuracy)
            chosen["student"] = (name, step, why)
        for role, (run, step, _) in chosen.items():
            if run == name:
                shutil.copytree(folders[step], out / role)
        for folder in folders.values():
            shutil.rmtree(folder)
    base = {
        role: {"run": run, "step": step, "why": why, **curves[run][str(step)]}
        for role, (run, step, why) in chosen.items()
    }
    atomic_write_json(out / "pretrain_log.json", logs)
    atomic_write_json(out / "accuracy_curve.json", curves)
    atomic_write_json(out / "base.json", base)
    return base
