"""Chapter 02's "Does DPO learn?": the margin intervals per replicate as a figure and as generated prose."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt

from .dpo_margin import verdicts
from .lr_sweep import _at, pick_rate
from .plots import color_of, set_style

KINDS = {"gold": "gold solution over the base's wrong answer", "unused": "rollout pairs the cap left out"}


def strip_margins(per_replicate: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The margin results without the per-pair lists (what a chapter saves)."""
    return [
        {
            name: {
                k: ({kk: vv for kk, vv in v.items() if kk != "margins"} if isinstance(v, dict) else v)
                for k, v in result.items()
            }
            for name, result in runs.items()
        }
        for runs in per_replicate
    ]


def margin_figure(per_replicate: Sequence[Mapping[str, Mapping[str, Any]]]) -> plt.Figure:
    """Each run's mean held-out reward margin with its 95% interval, per replicate and pairs set, beside 0."""
    set_style()
    fig, axes = plt.subplots(1, len(KINDS), figsize=(10, 3.2), sharey=True)
    for ax, (kind, title) in zip(axes, KINDS.items(), strict=True):
        labels = []
        for j, runs in enumerate(per_replicate):
            for name, result in runs.items():
                s = result.get(kind)
                if s is None:
                    continue
                y = len(labels)
                labels.append(f"{name} (replicate {j})")
                m = s["reward_margin"]
                err = [[m - s["margin_ci_low"]], [s["margin_ci_high"] - m]]
                ax.errorbar(m, y, xerr=err, fmt="o", capsize=3, color=color_of(name))
        ax.axvline(0, ls="--", color="grey", lw=1)
        ax.set_yticks(range(len(labels)), labels)
        ax.set(xlabel="reward margin (mean, 95% interval)", title=title)
    fig.tight_layout()
    return fig


def _interval(s: Mapping[str, Any]) -> str:
    return f"{s['reward_margin']:+.4f} [{s['margin_ci_low']:+.4f}, {s['margin_ci_high']:+.4f}]"


def margin_markdown(
    per_replicate: Sequence[Mapping[str, Mapping[str, Any]]],
    heldout: Mapping[str, Any],
    noise: Sequence[Mapping[str, Mapping[str, float]]],
    profile: Any,
) -> str:
    """Per run and pairs set the margin in each replicate and the verdict; the norm beside the noise norm."""
    lines = [
        f"On {heldout['problems']} fresh held-out problems the base answers {heldout['base_accuracy']:.1%} right; "
        f"its {heldout['pairs']} wrong answers give as many (gold solution, wrong answer) pairs."
    ]
    for name, by_kind in verdicts(per_replicate).items():
        for kind, verdict in by_kind.items():
            if verdict is None:
                continue
            values = "; ".join(
                f"replicate {j}: {_interval(runs[name][kind])} on {runs[name][kind]['pairs']} pairs"
                for j, runs in enumerate(per_replicate)
                if name in runs and runs[name].get(kind)
            )
            lines.append(
                f"- **{name}** ({profile.train.lr_for(name):g}), {KINDS[kind]}: {values}. **{verdict}**."
            )
    for name in ("dpo", "dpo_samelr"):
        ratios = [n[name]["ratio"] for n in noise if name in n]
        if len(ratios) == 1:
            lines.append(
                f"- **{name}**'s update norm is {ratios[0]:.1f}x the noise norm (one replicate; section 6)."
            )
        elif ratios:
            lines.append(
                f"- **{name}**'s update norm is {min(ratios):.1f}x to {max(ratios):.1f}x the noise norm "
                f"over {len(ratios)} replicates (section 6)."
            )
    return "\n".join(lines)


def rate_markdown(sweep: Mapping[str, Any] | None, profile: Any) -> str:
    """How the profile's rates stand to the sweep: its rule, what it picks, what the book keeps and why."""
    if sweep is None:
        return "No sweep is stored for this profile, so its rates are not checked against one."
    t = profile.train
    methods = sweep.get("methods", {})
    lines = [
        "The sweep's rule (`helpers.lr_sweep.pick_rate`): among the rates at which a method learns (DPO: "
        "its held-out reward margin's interval, on the gold pairs where measured, above 0 and its accuracy not below the base's beyond its "
        "interval; the others: accuracy above the base's), the most accurate."
    ]
    for method in sorted(methods):
        pick = pick_rate(methods[method])
        used = _at(methods[method], t.lr_for(method))
        got = "no rate learns" if pick is None else f"it picks {pick['lr']:g} ({pick['accuracy']:.1%})"
        keep = f"the profile uses {t.lr_for(method):g}"
        if used is not None:
            keep += f" ({used['accuracy']:.1%} [{used['ci_low']:.1%}, {used['ci_high']:.1%}])"
            if pick is not None and pick is not used:
                overlap = used["ci_high"] >= pick["ci_low"] and pick["ci_high"] >= used["ci_low"]
                keep += (
                    f", whose accuracy interval {'overlaps' if overlap else 'does not overlap'} the pick's"
                )
        lines.append(f"- {method}: {got}; {keep}.")
    lines.append(
        f"The book keeps the study's protocol instead of each method's best rate: one shared rate "
        f"({t.lr:g}) for every method but DPO, and DPO at {t.lr / t.lr_for('dpo'):g}x less, the study's ratio, "
        "so that the updates differ by their loss alone; where the sweep's pick differs, the lines above say "
        "whether the two accuracy intervals overlap."
    )
    return "\n".join(lines)
