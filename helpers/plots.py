"""Figures of the first chapters (problems, base models, rollouts), in one house style.

Each function takes plain numbers (the dicts the stages write) and returns the
matplotlib Figure, so the notebooks only call and show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import matplotlib.pyplot as plt
import seaborn as sns

METHOD_ORDER = ["sft", "rft", "dft", "rift", "rift_paper", "grpo", "grpo_paper", "dpo"]
PALETTE = dict(zip(METHOD_ORDER, sns.color_palette("tab10", len(METHOD_ORDER)), strict=True))


def set_style() -> None:
    """The house style for every figure of the book."""
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def problem_stats(problems: Sequence[dict], title: str = "") -> plt.Figure:
    """Number of reasoning steps, size of the answer and length of the question."""
    set_style()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    steps = Counter(p["solution"].count("\n") for p in problems)
    axes[0].bar([str(k) for k in sorted(steps)], [steps[k] for k in sorted(steps)], color="C0")
    axes[0].set(xlabel="solution lines before ####", ylabel="problems", title="steps")
    answers = [float(p["answer"]) for p in problems if _is_number(p["answer"])]
    sns.histplot(answers, bins=30, ax=axes[1], color="C1", log_scale=(False, False))
    axes[1].set(xlabel="final answer", title="answers")
    sns.histplot([len(p["question"].split()) for p in problems], bins=25, ax=axes[2], color="C2")
    axes[2].set(xlabel="words in the question", title="question length")
    if title:
        fig.suptitle(title, y=1.04)
    return fig


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def pretrain_curves(logs: dict[str, dict], marks: dict[str, int] | None = None) -> plt.Figure:
    """Pretraining loss of each tiny run, with the student/teacher checkpoints marked."""
    set_style()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for name, log in logs.items():
        ax.plot(log["steps"], log["loss"], label=f"{name} ({log['parameters'] / 1e6:.2f}M params)")
    for label, step in (marks or {}).items():
        ax.axvline(step, ls="--", color="grey", lw=1)
        ax.text(step, ax.get_ylim()[1], f" {label}", va="top", fontsize=9, color="grey")
    ax.set(xlabel="step", ylabel="next-token loss", yscale="log", title="pretraining on generated problems")
    ax.legend(frameon=False)
    return fig


def accuracy_curve(curve: dict[str, dict[str, float]], marks: dict[str, int] | None = None) -> plt.Figure:
    """Greedy and sampled accuracy against pretraining steps: how student and teacher were picked."""
    set_style()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    steps = sorted(int(s) for s in curve)
    for mode, style in (("greedy", "-o"), ("sampled", "--s")):
        ax.plot(steps, [curve[str(s)][mode] for s in steps], style, label=mode)
    for label, step in (marks or {}).items():
        ax.axvline(step, ls=":", color="grey")
        ax.text(step, 0.02, f" {label}", fontsize=9, color="grey")
    ax.set(xlabel="pretraining step", ylabel="accuracy on held-out problems", ylim=(0, 1),
           title="accuracy along pretraining")
    ax.legend(frameon=False)
    return fig


def rollout_rewards(summary: dict, k: int) -> plt.Figure:
    """How many of the K rollouts of a prompt are right, and the share of mixed groups."""
    set_style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    counts = summary["correct_per_group"]
    xs = list(range(k + 1))
    ys = [counts.get(str(x), 0) for x in xs]
    colors = ["C3" if x == 0 else "C2" if x == k else "C0" for x in xs]
    axes[0].bar([str(x) for x in xs], ys, color=colors)
    axes[0].set(xlabel=f"correct rollouts out of {k}", ylabel="prompts",
                title=f"reward per group (mean reward {summary['reward_mean']:.2f})")
    shares = [summary["all_wrong_share"], summary["mixed_share"], summary["all_correct_share"]]
    axes[1].barh(["all wrong", "mixed", "all right"], shares, color=["C3", "C0", "C2"])
    axes[1].set(xlim=(0, 1), xlabel="share of prompts", title=f"{summary['dpo_pairs']} DPO pairs")
    for y, s in enumerate(shares):
        axes[1].text(s + 0.01, y, f"{s:.0%}", va="center")
    return fig
