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
CONTROL_RUNS = ("sft_order", "sft_seed", "dpo_samelr", "online_grpo")
# Controls get their own colour and line style: two SFT reruns drawn in SFT's blue and dashed
# alike could not be told apart (and neither from SFT where they overlap it).
PALETTE = dict(zip(METHOD_ORDER, sns.color_palette("tab10", len(METHOD_ORDER)), strict=True)) | {
    "sft_order": sns.color_palette("tab10")[8],
    "sft_seed": sns.color_palette("tab10")[9],
    "dpo_samelr": (0.0, 0.0, 0.0),
    "online_grpo": (0.55, 0.35, 0.0),
}
CONTROL_STYLES = {
    "sft_order": "--",
    "sft_seed": "-.",
    "dpo_samelr": ":",
    "online_grpo": (0, (5, 1, 1, 1, 1, 1)),
}


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
    ax.set(
        xlabel="pretraining step",
        ylabel="accuracy on held-out problems",
        ylim=(0, 1),
        title="accuracy along pretraining",
    )
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
    axes[0].set(
        xlabel=f"correct rollouts out of {k}",
        ylabel="prompts",
        title=f"reward per group (mean reward {summary['reward_mean']:.2f})",
    )
    shares = [summary["all_wrong_share"], summary["mixed_share"], summary["all_correct_share"]]
    axes[1].barh(["all wrong", "mixed", "all right"], shares, color=["C3", "C0", "C2"])
    axes[1].set(xlim=(0, 1), xlabel="share of prompts", title="groups by outcome")
    for y, s in enumerate(shares):
        axes[1].text(s + 0.01, y, f"{s:.0%}", va="center")
    return fig


def run_of(label: str) -> str:
    """The run a series is about: "sft-rft" or "base-rft" (a pair with a reference) is rft."""
    return label.split("-", 1)[-1] if "-" in label else label


def color_of(run: str) -> tuple:
    """One colour per method and per control; other runs (e.g. dpo_norm) take their method's."""
    run = run_of(run)
    return PALETTE.get(run, PALETTE.get(run.split("_")[0], (0.4, 0.4, 0.4)))


def line_style(run: str):
    """Methods solid, each control its own dash pattern (so reruns of one method stay apart)."""
    return CONTROL_STYLES.get(run_of(run), "-")


def panel_grid(n: int, cols: int, width: float, height: float):
    """A figure of n small panels, `cols` to a row, the unused ones switched off."""
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes


def loss_curves(logs: dict[str, list[dict]], key: str = "loss") -> plt.Figure:
    """Training loss of every run, one small panel each (the losses live on different scales)."""
    set_style()
    fig, axes = panel_grid(len(logs), 4, 3.2, 2.4)
    for ax, (name, log) in zip(axes.flat, logs.items(), strict=False):
        ax.plot([e["step"] for e in log], [e[key] for e in log], color=color_of(name))
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=8)
    fig.supxlabel("step")
    fig.supylabel(key)
    fig.tight_layout()
    return fig


def lr_sweep(sweep: dict) -> plt.Figure:
    """Held-out accuracy against peak learning rate, one line per swept method."""
    set_style()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    base = None
    for method, rows in sweep["methods"].items():
        rows = sorted(rows, key=lambda r: r["lr"])
        lrs = [r["lr"] for r in rows]
        acc = [r["accuracy"] for r in rows]
        err = [
            [a - r["ci_low"] for a, r in zip(acc, rows, strict=True)],
            [r["ci_high"] - a for a, r in zip(acc, rows, strict=True)],
        ]
        ax.errorbar(lrs, acc, yerr=err, marker="o", capsize=3, label=method, color=color_of(method))
        base = rows[0]["base_accuracy"]
    if base is not None:
        ax.axhline(base, ls="--", color="grey", lw=1)
        ax.text(ax.get_xlim()[0], base, " base", va="bottom", color="grey", fontsize=9)
    ax.set(
        xscale="log",
        xlabel="peak learning rate",
        ylabel="greedy accuracy (held out)",
        ylim=(0, 1),
        title=f"learning-rate sweep ({sweep['n_eval']} problems, measured {sweep['measured']})",
    )
    ax.legend(frameon=False)
    return fig


def update_norms(table, by_layer) -> plt.Figure:
    """Size of each run's update: global Frobenius norm, and its split over layers."""
    set_style()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1, 1.4]})
    runs = list(table.index)
    axes[0].barh(runs, table["delta_norm"], color=[color_of(r) for r in runs])
    axes[0].invert_yaxis()
    axes[0].set(xscale="log", xlabel="||dW||_F over all modules (log)", title="update norm")
    per_layer = (
        by_layer.groupby(["run", "layer"])["norm"].apply(lambda x: float((x**2).sum() ** 0.5)).reset_index()
    )
    for run in runs:
        part = per_layer[per_layer["run"] == run]
        axes[1].plot(
            part["layer"], part["norm"], marker="o", ms=3, label=run, color=color_of(run), ls=line_style(run)
        )
    axes[1].set(yscale="log", xlabel="layer", ylabel="||dW||_F of the layer", title="by layer")
    axes[1].legend(frameon=False, fontsize=8, ncol=2, bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig
