"""Figures of the analysis chapters: geometry, mode connectivity, CKA and evaluation.

Inputs are the plain dicts the analysis modules return (`geometry.pairwise_report`,
`connectivity.path_losses`, `cka.cka_by_layer`, `evaluate.compare_methods`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from .plots import color_of, line_style, panel_grid, set_style


def pair_entry(report: Mapping, a: str, b: str) -> tuple[dict, bool]:
    """The report's entry of pair (a, b) in either order; the flag says whether it was flipped."""
    for entry in report["pairs"]:
        if (entry["a"], entry["b"]) == (a, b):
            return entry, False
        if (entry["a"], entry["b"]) == (b, a):
            return entry, True
    raise KeyError(f"pair {a}-{b} is not in the report")


def cosine_matrix(report: Mapping) -> pd.DataFrame:
    """Global cosine of every pair as a symmetric table (1 on the diagonal)."""
    names = report["methods"]
    mat = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for e in report["pairs"]:
        mat.loc[e["a"], e["b"]] = mat.loc[e["b"], e["a"]] = e["global_cosine"]
    return mat


def cosine_heatmap(report: Mapping) -> plt.Figure:
    """Global cosine between every pair of updates."""
    set_style()
    return cosine_matrix_figure(cosine_matrix(report), "cosine of the weight updates")


def cosine_matrix_figure(mat: pd.DataFrame, title: str) -> plt.Figure:
    """A symmetric run-by-run cosine matrix as an annotated heatmap on the fixed scale [-1, 1]."""
    size = 0.55 * len(mat) + 2
    fig, ax = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(
        mat,
        annot=True,
        fmt=".2f",
        cmap="RdBu_r",
        vmin=-1,
        vmax=1,
        square=True,
        ax=ax,
        annot_kws={"fontsize": 8},
        cbar_kws={"shrink": 0.7, "label": "global cosine"},
    )
    ax.set_title(title)
    return fig


CHANCE_COLOR = "0.55"
READING_TITLES = {
    "span": "outside {ref}'s column space",
    "top_k": "outside {ref}'s top-{k} left singular vectors",
    "direction": "outside {ref}'s direction (sqrt(1 - cos^2))",
}


def _chance_band(ax, stats, label: str = "chance") -> None:
    """A grey band over the 5-95% range of a chance measure and a dashed line at its mean."""
    if not stats:
        return
    ax.axhspan(stats["lo"], stats["hi"], color=CHANCE_COLOR, alpha=0.2, lw=0)
    ax.axhline(stats["mean"], color=CHANCE_COLOR, ls="--", lw=1, label=label)


def _legend_outside(ax, **kwargs) -> None:
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), **kwargs)


def cosines_to(report: Mapping, ref: str = "sft", chance: Mapping | None = None, floor: str | None = None):
    """Global cosine of every update to `ref`'s, with the chance band and the noise floor (a rerun of `ref`)."""
    set_style()
    names = [n for n in report["methods"] if n != ref]
    values = [pair_entry(report, ref, n)[0]["global_cosine"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2.5), 3.4))
    ax.bar(names, values, color=[color_of(n) for n in names])
    ax.axhline(0, color="black", lw=0.6)
    if chance:
        _chance_band(ax, chance["measures"]["global_cosine"], "two random updates (5-95%)")
    if floor and floor in names:
        ax.axhline(values[names.index(floor)], color="black", ls=":", lw=1, label=f"noise floor ({floor})")
    ax.set(
        ylim=(min(-0.1, min(values) - 0.05), 1.02), ylabel=f"global cosine to {ref}", title=f"cosine to {ref}"
    )
    ax.tick_params(axis="x", rotation=30)
    if chance or floor:
        _legend_outside(ax)
    return fig


def angle_distributions(report: Mapping, ref: str = "sft", chance: Mapping | None = None) -> plt.Figure:
    """Per-module smallest and largest principal angle between each method's update and `ref`'s,
    with the chance level of their medians over modules (two random rank-r updates)."""
    set_style()
    rows = []
    for name in report["methods"]:
        if name == ref:
            continue
        entry, _ = pair_entry(report, ref, name)
        for kind, key in (("smallest", "angle_min_by_module"), ("largest", "angle_max_by_module")):
            rows += [{"run": name, "angle": v, "which": kind} for v in entry[key] if not _nan(v)]
    data = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * data["run"].nunique() + 3), 3.8))
    sns.boxplot(data=data, x="run", y="angle", hue="which", ax=ax, fliersize=2, palette=["C0", "C1"])
    if chance:
        for key, kind in (("angle_min_median", "smallest"), ("angle_max_median", "largest")):
            _chance_band(ax, chance["measures"][key], f"chance, median {kind}")
    ax.axhline(90, color="grey", lw=1, ls=":")
    ax.set(
        ylim=(0, 92),
        ylabel=f"principal angle to {ref} (deg)",
        xlabel="",
        title=f"top-{report['k']} output subspaces: angles to {ref}, over modules",
    )
    ax.tick_params(axis="x", rotation=30)
    _legend_outside(ax, title="angle")
    return fig


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def orthogonal_by_layer(report: Mapping, ref: str = "sft", chance: Mapping | None = None) -> plt.Figure:
    """Share of each update outside `ref`'s, layer by layer, in the three readings side by side,
    with the chance band of two random rank-r updates per layer."""
    set_style()
    readings = report.get("readings", ["span"])
    fig, axes = plt.subplots(
        1, len(readings), figsize=(4.2 * len(readings) + 1.5, 3.6), sharey=True, squeeze=False
    )
    layers = report["layers"]
    for ax, reading in zip(axes[0], readings, strict=True):
        suffix = "" if reading == "span" else f"_{reading}"
        for name in report["methods"]:
            if name == ref:
                continue
            entry, flipped = pair_entry(report, ref, name)
            # orth_frac is b's share outside a's space; we want `name` outside `ref`.
            series = entry[f"orth_frac_rev{suffix}_by_layer" if flipped else f"orth_frac{suffix}_by_layer"]
            ax.plot(layers, series, marker="o", ms=3, label=name, color=color_of(name), ls=line_style(name))
        if chance:
            band = chance["by_layer"][f"orth_frac{suffix}_by_layer"]
            ax.fill_between(layers, band["lo"], band["hi"], color=CHANCE_COLOR, alpha=0.25, lw=0)
            ax.plot(layers, band["mean"], color=CHANCE_COLOR, ls="--", lw=1, label="two random updates")
        ax.set(
            ylim=(0, 1.02),
            xlabel="layer",
            title=f"{reading}: " + READING_TITLES[reading].format(ref=ref, k=report["k"]),
        )
        ax.set_xticks(layers)
        ax.title.set_fontsize(9)
    axes[0][0].set_ylabel(f"orthogonal fraction to {ref}")
    _legend_outside(axes[0][-1], ncol=1)
    return fig


def norm_by_layer(report: Mapping) -> plt.Figure:
    """||dW||_F of each update, layer by layer (log scale)."""
    set_style()
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    layers = report["layers"]
    for name in report["methods"]:
        norms = report["per_method"][name]["norm_by_layer"]
        ax.plot(layers, norms, marker="o", ms=3, label=name, color=color_of(name), ls=line_style(name))
    ax.set(yscale="log", xlabel="layer", ylabel="||dW||_F", title="update norm by layer")
    ax.set_xticks(layers)
    _legend_outside(ax)
    return fig


def effective_ranks(report: Mapping, rank: int | None = None, chance: Mapping | None = None) -> plt.Figure:
    """Effective rank of each update per module (modules with a zero update left out), with
    the LoRA rank and the effective rank of a random rank-r update."""
    set_style()
    rows = [
        {"run": n, "effective rank": v}
        for n in report["methods"]
        for v in report["per_method"][n]["effective_rank_by_module"]
        if not _nan(v)
    ]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(report["methods"]) + 3), 3.4))
    sns.boxplot(
        data=pd.DataFrame(rows),
        x="run",
        y="effective rank",
        ax=ax,
        fliersize=2,
        hue="run",
        palette={n: color_of(n) for n in report["methods"]},
        legend=False,
    )
    if rank:
        ax.axhline(rank, color="black", ls=":", lw=1, label=f"LoRA rank {rank}")
    if chance:
        _chance_band(ax, chance["measures"]["effective_rank_median"], "random rank-r update")
    ax.set(xlabel="", title="effective rank of dW per module")
    ax.tick_params(axis="x", rotation=30)
    if rank or chance:
        _legend_outside(ax)
    return fig


def path_curves(curves: Mapping[str, Mapping], measure: str = "answer_ce") -> plt.Figure:
    """Held-out loss along the straight line between two updates, one panel per pair."""
    set_style()
    fig, axes = panel_grid(len(curves), 3, 4, 3)
    for ax, (pair, curve) in zip(axes.flat, curves.items(), strict=False):
        ts, ys = curve["ts"], curve[measure]
        a, b = pair.split("-", 1)
        ax.plot(ts, ys, marker="o", ms=3, color="C0")
        ax.plot([ts[0], ts[-1]], [ys[0], ys[-1]], ls=":", color="grey")
        ax.set_title(pair, fontsize=10)
        ax.set_xticks([0, 0.5, 1], [a, "0.5", b], fontsize=8)
    fig.supylabel(
        {"answer_ce": "answer CE (nats/token)", "solution_nll": "solution NLL (nats/token)"}.get(
            measure, measure
        )
    )
    fig.tight_layout()
    return fig


def cka_curves(by_pair: Mapping[str, Sequence[float]], title: str) -> plt.Figure:
    """CKA per layer for several model pairs."""
    set_style()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for pair, values in by_pair.items():
        other = pair.split("-", 1)[1]
        ax.plot(range(len(values)), values, marker="o", ms=3, label=pair, color=color_of(other))
    ax.set(xlabel="block output (0 = first block; embeddings not compared)", ylabel="CKA", title=title)
    ax.legend(frameon=False, fontsize=8, ncol=2)
    return fig


def accuracy_bars(evaluation: Mapping) -> plt.Figure:
    """Accuracy of every model with its 95% Wilson interval."""
    set_style()
    names = list(evaluation["accuracy"])
    acc = np.array([evaluation["accuracy"][n] for n in names])
    lo = np.array([evaluation["ci"][n][0] for n in names])
    hi = np.array([evaluation["ci"][n][1] for n in names])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(names, acc, xerr=[acc - lo, hi - acc], color=[color_of(n) for n in names], capsize=3)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="greedy accuracy (95% Wilson interval)", title="held-out accuracy")
    return fig


HOLM_ALPHA = 0.05
HOLM_COLORS = ("#eef1f5", "#23456e")  # p >= alpha, p < alpha


def mcnemar_heatmap(evaluation: Mapping, adjusted: bool = True, alpha: float = HOLM_ALPHA) -> plt.Figure:
    """Exact McNemar p-value of every pair (Holm-adjusted by default) as text, each cell in one of
    two colours: dark where p < alpha (the pair differs), light elsewhere, with a key saying so,
    so the survivors are read off the colour, not guessed from a continuous scale."""
    set_style()
    names = list(evaluation["accuracy"])
    table = evaluation["mcnemar_p_holm" if adjusted else "mcnemar_p"]
    p = np.full((len(names), len(names)), np.nan)
    for pair, value in table.items():
        a, b = _split_pair(pair, names)
        p[names.index(a), names.index(b)] = p[names.index(b), names.index(a)] = value
    significant = np.where(np.isnan(p), np.nan, (p < alpha).astype(float))
    size = 0.55 * len(names) + 2
    fig, ax = plt.subplots(figsize=(size + 2.5, size))
    ax.imshow(np.ma.masked_invalid(significant), cmap=ListedColormap(HOLM_COLORS), vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if not np.isnan(p[i, j]):
                dark = significant[i, j] == 1
                text = f"{p[i, j]:.2g}" + ("*" if dark else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.grid(False)
    kind = "Holm-adjusted" if adjusted else "raw"
    handles = [
        Patch(facecolor=HOLM_COLORS[1], label=f"{kind} p < {alpha:g}: differ (*)"),
        Patch(facecolor=HOLM_COLORS[0], edgecolor="0.7", label=f"{kind} p >= {alpha:g}"),
    ]
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"exact McNemar p ({kind})")
    return fig


def _split_pair(pair: str, names: Sequence[str]) -> tuple[str, str]:
    """Split "a-b" where names may themselves contain no '-' (ours use '_')."""
    for name in names:
        if pair.startswith(name + "-") and pair[len(name) + 1 :] in names:
            return name, pair[len(name) + 1 :]
    raise KeyError(f"cannot split pair {pair!r} into two of {list(names)}")


MARKERS = "osD^v<>phX*P8H"


def accuracy_against(
    evaluation: Mapping, xs: Mapping[str, float], xlabel: str, ax=None, log: bool = False
) -> plt.Axes:
    """Accuracy of each model against one number per model (update norm, angle to SFT...):
    a coloured marker per run (no text labels to pile up; the legend names them) and the base
    model's accuracy as a dashed line."""
    set_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5))
    runs = [n for n in xs if n in evaluation["accuracy"] and not _nan(xs[n])]
    for k, name in enumerate(runs):
        lo, hi = evaluation["ci"][name]
        y = evaluation["accuracy"][name]
        ax.errorbar(
            [xs[name]],
            [y],
            yerr=[[y - lo], [hi - y]],
            marker=MARKERS[k % len(MARKERS)],
            color=color_of(name),
            capsize=2,
            ls="none",
            label=name,
        )
    if "base" in evaluation["accuracy"]:
        ax.axhline(evaluation["accuracy"]["base"], color="black", ls="--", lw=1, label="base model")
    ys = [v for n in runs for v in evaluation["ci"][n]] + [evaluation["accuracy"].get("base", 0.0)]
    # a little room below 0 and above 1, so a point or the base line on the edge stays visible
    ax.set(xlabel=xlabel, ylabel="accuracy", ylim=(max(-0.02, min(ys) - 0.05), min(1.02, max(ys) + 0.05)))
    if log:
        ax.set_xscale("log")
    return ax


def accuracy_against_geometry(
    evaluation: Mapping, panels: Mapping[str, Mapping[str, float]], log: Sequence[str] = ()
) -> plt.Figure:
    """`accuracy_against` side by side for several geometry numbers ({xlabel: {run: x}}), one
    legend for all panels right of the last one."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 2, 3.8), squeeze=False)
    for ax, (xlabel, xs) in zip(axes[0], panels.items(), strict=True):
        accuracy_against(evaluation, xs, xlabel, ax, log=xlabel in log)
    fig.tight_layout()
    handles, labels = {}, []
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    labels = list(handles)
    axes[0][-1].legend(
        [handles[k] for k in labels],
        labels,
        frameon=False,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        ncol=1 + len(labels) // 15,
    )
    return fig
