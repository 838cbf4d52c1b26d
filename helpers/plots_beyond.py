"""Figures of chapter 08: dose-response, trajectories, the contrastive family, function space.

Each takes the plain dicts of helpers.beyond_analysis / beyond_measures (the chapter's JSON)
and returns the matplotlib Figure, in the house style (helpers.plots).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .beyond import CONTRASTIVE
from .beyond_analysis import MEASURES, SETTLE_COSINE, pair_value
from .plots import color_of, set_style
from .plots_analysis import cosine_matrix_figure

CONTRASTIVE_COLORS = dict(zip(CONTRASTIVE, sns.color_palette("Dark2", len(CONTRASTIVE)), strict=True))
MARKERS = "osD^vP*X"


def method_color(name: str) -> tuple:
    """The house colour of a main method; the contrastive losses get their own."""
    return CONTRASTIVE_COLORS.get(name) or color_of(name)


def _mean_sd(rows: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    arr = np.array(rows, dtype=float)
    return np.nanmean(arr, axis=0), (
        np.nanstd(arr, axis=0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])
    )


def dose_response(dose: Mapping[str, Any]) -> plt.Figure:
    """Cosine to RFT against the wrong rollouts' share of the loss: replicates, level means ± sd, the
    pooled line, and where it reaches the study's SFT-RFT cosine."""
    set_style()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    points = pd.DataFrame(dose["points"])
    for i, (j, group) in enumerate(points.groupby("replicate")):
        ax.scatter(
            group["share"], group["cosine_to_rft"], marker=MARKERS[i % 8], alpha=0.5, label=f"replicate {j}"
        )
    for v in dose["levels"].values():
        ax.errorbar(
            v["share"]["mean"],
            v["cosine_to_rft"]["mean"],
            yerr=v["cosine_to_rft"]["sd"],
            fmt="o",
            color="k",
            capsize=4,
            ms=4,
        )
        ax.annotate(
            v["run"],
            (v["share"]["mean"], v["cosine_to_rft"]["mean"]),
            xytext=(6, 6),
            textcoords="offset points",
            fontsize=8,
        )
    fit, implied = dose["fit"], dose["implied"]
    lo = min(0.0, implied["share"]) if np.isfinite(implied["share"]) else 0.0
    xs = np.linspace(lo, max(dose["measured_shares"][1], 0.05), 50)
    ax.plot(
        xs,
        fit["intercept"] + fit["slope"] * xs,
        color="C3",
        label=f"least squares, slope {fit['slope']:+.2f}",
    )
    ax.axhline(
        dose["study_cosine"], color="0.4", ls="--", lw=1, label=f"study SFT-RFT {dose['study_cosine']}"
    )
    if implied["ci"]:
        ax.axvspan(max(implied["ci"][0], lo), min(implied["ci"][1], xs[-1]), color="C3", alpha=0.12, lw=0)
    if np.isfinite(implied["share"]):
        ax.axvline(implied["share"], color="C3", ls=":", lw=1, label=f"implied share {implied['share']:.2f}")
    ax.set(
        xlabel="wrong rollouts' share of the SFT loss (tokens)",
        ylabel="global cosine to RFT",
        title="Dose-response: SFT turns away from RFT with the wrong share",
    )
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    return fig


def trajectories(trajs: Mapping[str, Mapping[str, Any]], ref: str = "sft") -> plt.Figure:
    """Against training steps: each method's cosine to `ref`, to its own result-step update, and the rotation
    of its top-k output subspace between consecutive kept steps (mean ± sd over replicates)."""
    set_style()
    first = next(iter(trajs.values()))
    steps, names = first["steps"], list(first["cosine_to_final"])
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for name in names:
        style = {"color": method_color(name), "label": name, "marker": "o", "ms": 3, "capsize": 2}
        if name != ref:
            m, s = _mean_sd(
                [
                    [
                        pair_value({p: v[i] for p, v in t["pair_cosine"].items()}, ref, name)
                        for i in range(len(steps))
                    ]
                    for t in trajs.values()
                ]
            )
            axes[0].errorbar(steps, m, yerr=s, **style)
        m, s = _mean_sd([t["cosine_to_final"][name] for t in trajs.values()])
        axes[1].errorbar(steps, m, yerr=s, **style)
        if len(steps) > 1:
            m, s = _mean_sd([t["rotation"][name] for t in trajs.values()])
            axes[2].errorbar(steps[1:], m, yerr=s, **style)
    axes[0].set(xlabel="step", ylabel=f"global cosine to {ref} (same step)", title=f"cosine to {ref}")
    axes[1].axhline(SETTLE_COSINE, color="0.4", ls="--", lw=1)
    axes[1].set(xlabel="step", ylabel="cosine to own result-step update", title="cosine to own final")
    axes[2].set(
        xlabel="step (to, from the previous kept step)",
        ylabel="median largest angle (deg)",
        title=f"rotation of the top-{first['k']} output subspace",
    )
    axes[2].legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def cosine_map(cosine: Mapping[str, Mapping[str, float]]) -> plt.Figure:
    """Global cosine between every pair of methods, main and contrastive, mean over the replicates that have it."""
    set_style()
    names = list(dict.fromkeys(n for table in cosine.values() for p in table for n in p.split("-", 1)))
    names = [n for n in names if n not in CONTRASTIVE] + [n for n in CONTRASTIVE if n in names]
    mat = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for a, b in itertools.combinations(names, 2):
        values = [pair_value(t, a, b) for t in cosine.values()]
        values = [v for v in values if v is not None]
        mat.loc[a, b] = mat.loc[b, a] = np.mean(values) if values else np.nan
    return cosine_matrix_figure(mat, "the contrastive family on the cosine map (mean over replicates)")


def contrastive_paths(paths: Mapping[str, Mapping[str, Any]], measure: str = "answer_ce") -> plt.Figure:
    """Held-out loss along the straight path from each contrastive update to SFT's and to DPO's (t = 1),
    one panel per loss, one line per replicate; the DPO-SFT path dotted for reference."""
    set_style()
    methods = list(
        dict.fromkeys(p.split("-", 1)[0] for table in paths.values() for p in table if p != "dpo-sft")
    )
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), squeeze=False, sharey=True)
    for ax, m in zip(axes[0], methods, strict=True):
        for j, table in paths.items():
            if not table:
                continue
            for ref, color in (("sft", color_of("sft")), ("dpo", color_of("dpo"))):
                c = table[f"{m}-{ref}"]
                ax.plot(c["ts"], c[measure], color=color, alpha=0.8, label=f"to {ref}" if j == "0" else None)
            c = table["dpo-sft"]
            ax.plot(c["ts"], c[measure], color="k", ls=":", lw=1, label="DPO to SFT" if j == "0" else None)
        ax.set(xlabel=f"t (0: {m}, 1: the other update)", title=m)
    axes[0, 0].set_ylabel(f"held-out {measure}")
    axes[0, -1].legend(frameon=False, fontsize=8)
    fig.suptitle("linear paths of the contrastive family (both barrier kinds in the table below)", y=1.02)
    fig.tight_layout()
    return fig


def function_space(rows: Sequence[Mapping[str, Any]], rho: Mapping[str, Mapping[str, Any]]) -> plt.Figure:
    """Change in accuracy against each measure (one dot per method and replicate), and the per-replicate
    Spearman rho of each measure with it."""
    set_style()
    frame = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, len(MEASURES) + 1, figsize=(4.0 * (len(MEASURES) + 1), 3.7))
    for ax, (measure, label) in zip(axes, MEASURES.items(), strict=False):
        for i, (_, group) in enumerate(frame.groupby("replicate")):
            ax.scatter(
                group[measure],
                group["accuracy_change"],
                c=[method_color(m) for m in group["method"]],
                marker=MARKERS[i % 8],
                s=28,
                alpha=0.85,
            )
        if measure == "forward_kl" and (frame[measure] > 0).all():
            ax.set_xscale("log")
        ax.set(xlabel=label, ylabel="accuracy - base accuracy")
    for i, measure in enumerate(MEASURES):
        values = [r[measure]["rho"] for r in rho.values()]
        axes[-1].scatter([i] * len(values), values, color="k", s=18, zorder=3)
        axes[-1].bar(i, np.nanmean(values) if np.isfinite(values).any() else 0.0, color="C0", alpha=0.4)
    axes[-1].set_xticks(range(len(MEASURES)), [MEASURES[m] for m in MEASURES], rotation=20, fontsize=8)
    axes[-1].set(ylim=(-1.05, 1.05), ylabel="Spearman rho with accuracy change", title="per replicate")
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=method_color(m), label=m)
        for m in frame["method"].unique()
    ]
    axes[-1].legend(handles=handles, frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
