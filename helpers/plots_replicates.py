"""Figures of numbers over replicates: the mean, an error bar or band from the smallest to the
largest replicate, and each replicate's own value as a dot.

Inputs are summaries (helpers.spread.summarise / summarise_tree): {mean, min, max, n, values},
where for a series (per layer, per step) mean/min/max are lists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from .connectivity import barrier
from .plots import color_of, line_style, panel_grid, set_style
from .spread import spread_text, summarise

CHANCE_COLOR = "0.55"
Summary = Mapping[str, Any]


def _legend_outside(ax, **kwargs) -> None:
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), **kwargs)


def _band(ax, stats: Mapping[str, Any] | None, label: str) -> None:
    """A grey band over a chance measure's 5-95% range and a dashed line at its mean."""
    if stats:
        ax.axhspan(stats["lo"], stats["hi"], color=CHANCE_COLOR, alpha=0.2, lw=0)
        ax.axhline(stats["mean"], color=CHANCE_COLOR, ls="--", lw=1, label=label)


def _present(s: Summary | None) -> bool:
    return bool(s) and s["n"] > 0


def summary_bars(
    groups: Mapping[str, Mapping[str, Summary]],
    ylabel: str,
    title: str,
    bands: Sequence[tuple[Mapping[str, Any] | None, str]] = (),
    lines: Sequence[tuple[float, str]] = (),
    log: bool = False,
    ylim: tuple[float, float] | None = None,
) -> plt.Figure:
    """Bars at the mean over replicates with min-max error bars and a dot per replicate.

    `groups` maps a group (drawn side by side, e.g. smallest/largest angle) to {run: summary};
    with one group the bars take each run's colour. `bands` are chance levels (stats with
    mean/lo/hi, label); `lines` horizontal references (value, label), e.g. a noise floor.
    """
    set_style()
    names = list(dict.fromkeys(n for g in groups.values() for n, s in g.items() if _present(s)))
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(names) + 3), 3.6))
    for i, (group, values) in enumerate(groups.items()):
        xs = np.arange(len(names)) + (i - (len(groups) - 1) / 2) * width
        for x, name in zip(xs, names, strict=True):
            s = values.get(name)
            if not _present(s):
                continue
            color = color_of(name) if len(groups) == 1 else f"C{i}"
            ax.bar(
                x, s["mean"], width * 0.9, color=color, alpha=0.85, label=group if name == names[0] else None
            )
            ax.errorbar(
                x,
                s["mean"],
                yerr=[[s["mean"] - s["min"]], [s["max"] - s["mean"]]],
                color="black",
                capsize=3,
                lw=1,
            )
            dots = [v for v in s["values"] if v is not None]
            ax.scatter([x] * len(dots), dots, s=9, color="black", zorder=3)
    for stats, label in bands:
        _band(ax, stats, label)
    for value, label in lines:
        ax.axhline(value, color="black", ls=":", lw=1, label=label)
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set(ylabel=ylabel, title=title)
    if log:
        ax.set_yscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    if len(groups) > 1 or bands or lines:
        _legend_outside(ax)
    return fig


def summary_lines(
    panels: Mapping[str, Mapping[str, Summary]],
    x: Sequence[float] | Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    bands: Mapping[str, Mapping[str, Any]] | None = None,
    cols: int = 3,
    log: bool = False,
    ylim: tuple[float, float] | None = None,
    chord: bool = False,
    legend: bool = True,
    sharey: bool = False,
) -> plt.Figure:
    """One panel per entry of `panels` ({title: {series: summary of a list}}): each series' mean
    line with a band from its smallest to its largest replicate. `x` is shared or per series;
    `bands` holds per panel a chance band ({mean, lo, hi} lists); `chord` draws the straight
    line between a series' mean endpoints (mode connectivity). Integer x (layers) get integer
    ticks only; the legend sits right of the last panel, off the data."""
    set_style()
    fig, axes = panel_grid(len(panels), cols, 4.2, 3.2)
    if sharey:
        visible = list(axes.flat)[: len(panels)]
        for ax in visible[1:]:
            ax.sharey(visible[0])
    for ax, (title, series) in zip(axes.flat, panels.items(), strict=False):
        for label, s in series.items():
            if not _present_list(s):
                continue
            xs = x[label] if isinstance(x, Mapping) else x
            color = color_of(label.split("-")[-1])
            mean, low, high = (np.array(s[k], dtype=float) for k in ("mean", "min", "max"))
            ax.plot(xs, mean, marker="o", ms=3, color=color, ls=line_style(label), label=label)
            ax.fill_between(xs, low, high, color=color, alpha=0.2, lw=0)
            if chord:
                ax.plot([xs[0], xs[-1]], [mean[0], mean[-1]], ls=":", color="grey")
        band = (bands or {}).get(title)
        if band:
            xs = x if not isinstance(x, Mapping) else next(iter(x.values()))
            ax.fill_between(xs, band["lo"], band["hi"], color=CHANCE_COLOR, alpha=0.25, lw=0)
            ax.plot(xs, band["mean"], color=CHANCE_COLOR, ls="--", lw=1, label="two random updates")
        ax.set_title(title, fontsize=9)
        shared = x if not isinstance(x, Mapping) else None
        if shared is not None and len(shared) <= 16 and all(float(v).is_integer() for v in shared):
            ax.set_xticks(list(shared))  # layers
        elif _integers(x):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # never a tick at layer 0.5
        if log:
            ax.set_yscale("log")
        if ylim:
            ax.set_ylim(*ylim)
    fig.supxlabel(xlabel)
    fig.supylabel(ylabel)
    fig.tight_layout()
    if legend and any(len(s) > 1 for s in panels.values()):
        _legend_outside(axes.flat[min(len(panels), axes.size) - 1])
    return fig


def _integers(x: Sequence[float] | Mapping[str, Sequence[float]]) -> bool:
    columns = x.values() if isinstance(x, Mapping) else [x]
    return all(float(v).is_integer() for xs in columns for v in xs)


CKA_FLOOR = 0.9


def cka_lines(panels: Mapping[str, Mapping[str, Summary]], layers: Sequence[int]) -> plt.Figure:
    """CKA per block over replicates on a fixed axis from CKA_FLOOR (lower only when a value
    is) to 1, so a 0.005 drop looks as small as it is. Layer i is block i's output: the
    embedding output is not compared (helpers.cka.hidden_states drops it)."""
    lows = [v for series in panels.values() for s in series.values() if s for v in s["min"] if v is not None]
    floor = min([CKA_FLOOR, *(math.floor(v * 10) / 10 for v in lows)])
    return summary_lines(
        panels, layers, "block output (0 = first block; embeddings not compared)", "CKA", ylim=(floor, 1.002)
    )


def _present_list(s: Summary | None) -> bool:
    return bool(s) and isinstance(s.get("mean"), list) and any(v is not None for v in s["mean"])


def pair_heatmap(table: Mapping[str, Summary], names: Sequence[str], title: str, label: str) -> plt.Figure:
    """A symmetric matrix of a pair measure ({"a-b": summary}): the mean over replicates in
    colour and as text, the min-max range beneath it; 1 on the diagonal."""
    set_style()
    size = len(names)
    mean = np.eye(size)
    text = [["1" if i == j else "" for j in range(size)] for i in range(size)]
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            s = table.get(f"{a}-{b}") or table.get(f"{b}-{a}")
            if i != j and _present(s):
                mean[i, j] = s["mean"]
                spread = "" if s["min"] == s["max"] else f"\n{s['min']:.2f}-{s['max']:.2f}"
                text[i][j] = f"{s['mean']:.2f}{spread}"
            elif i != j:
                mean[i, j] = np.nan
    fig, ax = plt.subplots(figsize=(0.75 * size + 2.5, 0.7 * size + 1.5))
    image = ax.imshow(mean, cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(size):
        for j in range(size):
            dark = not np.isnan(mean[i, j]) and abs(mean[i, j]) > 0.6
            ax.text(
                j, i, text[i][j], ha="center", va="center", fontsize=6.5, color="white" if dark else "black"
            )
    ax.set_xticks(range(size), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(size), names, fontsize=8)
    ax.grid(False)
    fig.colorbar(image, ax=ax, shrink=0.7, label=label)
    ax.set_title(title)
    return fig


def _rise_above_chord(ts: Sequence[float], losses: Sequence[float]) -> list[float]:
    """Loss minus the straight line between the endpoint losses (the chord barrier is its max)."""
    t, y = np.asarray(ts, dtype=float), np.asarray(losses, dtype=float)
    line = y[0] + (t - t[0]) / (t[-1] - t[0]) * (y[-1] - y[0])
    return (y - line).tolist()


def path_curves(paths: Mapping[str, Mapping[str, Summary]], measure: str = "answer_ce") -> plt.Figure:
    """Rise of the loss above the chord along each straight path between two updates
    ({"a-b": summarised path_losses}), one panel per path on one shared y axis, so equal
    bumps look equal whatever the endpoints' level: the mean over replicates, its range as a
    band, and the chord barrier (mean, range over replicates) in each panel's title."""
    unit = {"answer_ce": "answer CE", "solution_nll": "solution NLL"}.get(measure, measure)
    ts = next(iter(paths.values()))["ts"]["mean"]
    rises, barriers = {}, {}
    for pair, curve in paths.items():
        runs = [v for v in curve[measure]["values"] if v is not None and None not in v]
        per_replicate = [_rise_above_chord(ts, v) for v in runs]
        columns = [summarise([r[i] for r in per_replicate]) for i in range(len(ts))]
        rises[pair] = {key: [c[key] for c in columns] for key in ("mean", "min", "max", "n")}
        barriers[pair] = summarise([barrier(ts, v) for v in runs])
    fig = summary_lines(
        {pair: {pair: rise} for pair, rise in rises.items()},
        ts,
        "t",
        f"{unit} above the chord (nats/token)",
        legend=False,
        sharey=True,
    )
    for ax, pair in zip(fig.axes, paths, strict=False):
        a, b = pair.split("-", 1)
        ax.axhline(0, color="grey", ls=":", lw=1)
        ax.set_xticks([0, 0.5, 1], [a, "0.5", b], fontsize=8)
        ax.set_title(f"{pair}: barrier {spread_text(barriers[pair], '{:.2g}')}", fontsize=9)
    return fig
