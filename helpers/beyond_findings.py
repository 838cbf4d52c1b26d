"""Chapter 08's findings: one sentence each, judged in every replicate from the chapter's JSON record.

A finding holds when its criterion holds in every replicate, does not hold when it fails in
every one, and is inconclusive otherwise: when replicates disagree, when a replicate could
not measure it, or when fewer than MIN_REPLICATES measured it. Every threshold is a named
constant with the reason for its value. `summary_markdown` states this run's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .beyond_analysis import PAIR_SETTLE_TOL, SETTLE_COSINE, pair_value, spread
from .claims import BARRIER_MARGIN, MIN_COSINE_GAP

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
# One replicate cannot tell a property of the losses from one draw of the LoRA-init and
# data-order seeds (the study's own two-seed SFT cosines span 0.07 to 0.36).
MIN_REPLICATES = 2
# "Turns away": a line that loses less than MIN_COSINE_GAP (the smallest cosine difference
# the book reads as a difference) over half the range of shares is flat.
DOSE_SLOPE_MAX = -MIN_COSINE_GAP / 0.5
# "A teacher right most of the time": its wrong rollouts carry less than half of SFT's loss.
MOSTLY_RIGHT_SHARE = 0.5
# "Settles early": by the middle of the schedule up to the result step.
SETTLE_BY = 0.5
# "Tracks the change in accuracy": a Spearman correlation over methods significant at the
# chapter's usual level (scipy's test; with ten methods that is |rho| above about 0.65).
RHO_ALPHA = 0.05
# Pretty names for the sentences.
NAMES = {"ipo": "IPO", "dpo_norm": "length-normalised DPO", "simpo": "SimPO", "kto": "KTO"}


def verdict(oks: Mapping[str, bool | None]) -> tuple[str, str]:
    """The verdict over replicates and why: every replicate must be measured and agree."""
    n = len(oks)
    if n < MIN_REPLICATES:
        return INCONCLUSIVE, f"measured in {n} replicate(s); a verdict needs at least {MIN_REPLICATES}"
    if any(v is None for v in oks.values()):
        missing = [j for j, v in oks.items() if v is None]
        return INCONCLUSIVE, f"not measurable in replicate(s) {', '.join(missing)}"
    held = sum(bool(v) for v in oks.values())
    if held == n:
        return HOLDS, f"holds in all {n} replicates"
    if held == 0:
        return FAILS, f"fails in all {n} replicates"
    return INCONCLUSIVE, f"holds in {held} of {n} replicates"


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def _finding(
    fid: str,
    sentence: str,
    criterion: str,
    values: Mapping[str, Any],
    ok: Callable[[float], bool],
    thresholds: Mapping[str, float],
) -> dict[str, Any]:
    oks = {j: (bool(ok(v)) if _finite(v) else None) for j, v in values.items()}
    result, reason = verdict(oks)
    return {
        "id": fid,
        "sentence": sentence,
        "criterion": criterion,
        "thresholds": dict(thresholds),
        "per_replicate": {j: {"value": values[j], "ok": oks[j]} for j in values},
        "verdict": result,
        "reason": reason,
    }


def _ms(values: Mapping[str, Any], fmt: str = "+.2f") -> str:
    return _pm(list(values.values()), fmt)


def dose_findings(dose: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The wrong share turns SFT away from RFT; the study's cosine implies a mostly-right teacher."""
    slopes = {j: v["slope"] for j, v in dose["per_replicate"].items()}
    implied = {j: (v["implied_share"] if v["slope"] < 0 else None) for j, v in dose["per_replicate"].items()}
    pooled = dose["implied"]
    ci = pooled["ci"]
    interval = f"[{max(ci[0], 0):.2f}, {min(ci[1], 1):.2f}]" if ci else "unbounded"
    return [
        _finding(
            "dose_slope",
            f"SFT's update turns away from RFT's as the wrong rollouts' share of the loss grows "
            f"(slope {_ms(slopes)} cosine per unit share over replicates).",
            "per-replicate least-squares slope of cosine to RFT on wrong-token share <= DOSE_SLOPE_MAX",
            slopes,
            lambda s: s <= DOSE_SLOPE_MAX,
            {"DOSE_SLOPE_MAX": DOSE_SLOPE_MAX},
        ),
        _finding(
            "dose_implied_share",
            f"Read on this scale's line, the study's SFT-RFT cosine ({dose['study_cosine']}) implies wrong "
            f"rollouts carrying less than half of SFT's loss: a teacher right most of the time (pooled "
            f"share {pooled['share']:.2f}, 95% interval {interval}; an extrapolation from this scale).",
            "share where each replicate's line reaches the study's cosine < MOSTLY_RIGHT_SHARE",
            implied,
            lambda x: x < MOSTLY_RIGHT_SHARE,
            {"MOSTLY_RIGHT_SHARE": MOSTLY_RIGHT_SHARE},
        ),
    ]


def trajectory_findings(trajectories: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Directions settle by mid-schedule; the methods' cosines to SFT are set by the first kept step."""
    latest, gaps, first, by = {}, {}, None, None
    for j, t in trajectories.items():
        steps = list(t["settle_step"].values())
        latest[j] = None if any(s is None for s in steps) else max(steps)
        at = t["steps"].index(t["result_step"])
        to_sft = [v for p, v in t["pair_cosine"].items() if "sft" in p.split("-", 1)]
        gaps[j] = max(abs(v[0] - v[at]) for v in to_sft) if to_sft else None
        first, by = t["steps"][0], SETTLE_BY * t["result_step"]
    return [
        _finding(
            "directions_settle",
            f"Every method's update direction settles by mid-schedule (step {by:g}): from then on its cosine "
            f"to its own result-step update stays >= {SETTLE_COSINE} (latest settling step {_ms(latest, '.0f')}).",
            "latest settle step over methods <= SETTLE_BY * result_step",
            latest,
            lambda s: s <= by,
            {"SETTLE_COSINE": SETTLE_COSINE, "SETTLE_BY": SETTLE_BY},
        ),
        _finding(
            "separate_early",
            f"The methods separate early: at the first kept step (step {first}) every cosine to SFT is already "
            f"within {PAIR_SETTLE_TOL} of its result-step value (largest gap {_ms(gaps, '.2f')}).",
            "max over methods of |cos to SFT at the first kept step - at result_step| <= PAIR_SETTLE_TOL",
            gaps,
            lambda g: g <= PAIR_SETTLE_TOL,
            {"PAIR_SETTLE_TOL": PAIR_SETTLE_TOL},
        ),
    ]


def contrastive_findings(contrastive: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each contrastive loss is closer to DPO than to SFT in direction; none has a barrier to DPO."""
    out = []
    cos = contrastive["cosine"]
    for m in contrastive["methods"]:
        reps = [j for j in contrastive["replicates"] if j in cos]
        gap = {j: pair_value(cos[j], m, "dpo") - pair_value(cos[j], m, "sft") for j in reps}
        to_dpo = {j: pair_value(cos[j], m, "dpo") for j in reps}
        to_sft = {j: pair_value(cos[j], m, "sft") for j in reps}
        out.append(
            _finding(
                f"{m}_with_dpo",
                f"{NAMES.get(m, m)}'s update is closer in direction to DPO's than to SFT's "
                f"(cosine {_ms(to_dpo)} to DPO, {_ms(to_sft)} to SFT).",
                "cos(method, DPO) - cos(method, SFT) > MIN_COSINE_GAP",
                gap,
                lambda g: g > MIN_COSINE_GAP,
                {"MIN_COSINE_GAP": MIN_COSINE_GAP},
            )
        )
    paths = contrastive["paths"]
    worst = {
        j: max(
            c["barrier"][k]["answer_ce"]
            for p, c in paths[j].items()
            if p.endswith("-dpo")
            for k in c["barrier"]
        )
        for j in contrastive["replicates"]
        if paths.get(j)
    }
    out.append(
        _finding(
            "contrastive_in_dpo_basin",
            f"No contrastive loss has a barrier to DPO: the largest, over losses and both barrier kinds, is "
            f"{_ms(worst, '.3f')} nats/token of answer cross-entropy.",
            "max over contrastive losses and {chord, endpoint_mean} of the barrier to DPO <= BARRIER_MARGIN",
            worst,
            lambda b: b <= BARRIER_MARGIN,
            {"BARRIER_MARGIN": BARRIER_MARGIN},
        )
    )
    return out


def function_space_findings(rho: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[dict[str, Any]]:
    """Forward KL tracks the change in accuracy across methods, and better than norm and cosine."""
    p_kl = {j: r["forward_kl"]["p"] for j, r in rho.items()}
    rho_kl = {j: r["forward_kl"]["rho"] for j, r in rho.items()}
    margin = {
        j: abs(r["forward_kl"]["rho"]) - max(abs(r["norm"]["rho"]), abs(r["cosine_to_sft"]["rho"]))
        for j, r in rho.items()
    }
    return [
        _finding(
            "kl_tracks_accuracy",
            f"The forward KL from the base tracks the change in held-out accuracy across methods "
            f"(Spearman rho {_ms(rho_kl)}).",
            "Spearman p of forward KL vs accuracy change over methods < RHO_ALPHA",
            p_kl,
            lambda p: p < RHO_ALPHA,
            {"RHO_ALPHA": RHO_ALPHA},
        ),
        _finding(
            "kl_beats_weight_space",
            f"The forward KL tracks it more closely than the update norm or the cosine to SFT "
            f"(|rho| margin {_ms(margin)}).",
            "|rho(KL)| - max(|rho(norm)|, |rho(cosine to SFT)|) > 0",
            margin,
            lambda d: d > 0,
            {},
        ),
    ]


def findings(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every finding of the chapter, in the order of its sections."""
    return [
        *dose_findings(record["dose"]),
        *trajectory_findings(record["trajectories"]),
        *contrastive_findings(record["contrastive"]),
        *function_space_findings(record["function_space"]["rho"]),
    ]


def findings_frame(items: list[dict[str, Any]]):
    """The findings as a table: sentence, verdict, why."""
    import pandas as pd

    return pd.DataFrame(
        [{"finding": f["sentence"], "verdict": f["verdict"], "over replicates": f["reason"]} for f in items]
    )


def _pm(values: list[Any], fmt: str = ".3f") -> str:
    s = spread(values)
    return "n/a" if s["n"] == 0 else f"{s['mean']:{fmt}} ± {s['sd']:{fmt.lstrip('+')}}"


def _dose_line(d: Mapping[str, Any]) -> str:
    levels = "; ".join(
        f"{v['cosine_to_rft']['mean']:.3f} ± {v['cosine_to_rft']['sd']:.3f} at share {v['share']['mean']:.2f}"
        f" ({v['run']})"
        for v in d["levels"].values()
    )
    fit, implied = d["fit"], d["implied"]
    ci = implied["ci"]
    interval = (
        f"95% interval [{max(ci[0], 0):.2f}, {min(ci[1], 1):.2f}], clipped to [0, 1]"
        if ci
        else "an unbounded interval"
    )
    return (
        f"- **Dose-response** (cosine to RFT, mean ± sd over {len(d['per_replicate'])} replicates): {levels}. "
        f"Pooled least squares: slope {fit['slope']:+.3f} per unit share (95% CI [{fit['slope_ci'][0]:+.3f}, "
        f"{fit['slope_ci'][1]:+.3f}], R² {fit['r2']:.2f}). The study's SFT-RFT cosine {d['study_cosine']} lies at "
        f"share {implied['share']:.3f} ({interval}) on this line, an extrapolation from a model of this "
        f"scale to the study's, {'inside' if implied['within_measured'] else 'outside'} the shares measured here."
    )


def _trajectory_line(trajectories: Mapping[str, Any]) -> str:
    first = next(iter(trajectories.values()))
    methods = list(first["settle_step"])
    settle = ", ".join(
        f"{m} {_pm([t['settle_step'][m] for t in trajectories.values()], '.1f')}" for m in methods
    )
    rotation = ", ".join(
        f"{m} {_pm([t['rotation'][m][0] for t in trajectories.values() if t['rotation'][m]], '.1f')}°"
        for m in methods
    )
    return (
        f"- **Trajectories** (steps {', '.join(map(str, first['steps']))}): the step from which each direction "
        f"stays within cosine {SETTLE_COSINE} of its result-step update: {settle}. Rotation of the top-{first['k']} "
        f"output subspace between the first two kept steps (median largest angle): {rotation}."
    )


def _contrastive_line(c: Mapping[str, Any]) -> str:
    if not c["methods"]:
        return "- **Contrastive family**: not trained on this profile."
    parts = []
    for m in c["methods"]:
        reps = [j for j in c["replicates"] if j in c["cosine"]]
        to = {r: _pm([pair_value(c["cosine"][j], m, r) for j in reps]) for r in ("dpo", "sft")}
        bar = {
            r: _pm(
                [
                    c["paths"][j][f"{m}-{r}"]["barrier"]["chord"]["answer_ce"]
                    for j in reps
                    if c["paths"].get(j)
                ]
            )
            for r in ("dpo", "sft")
        }
        parts.append(
            f"{NAMES.get(m, m)}: cosine {to['dpo']} to DPO, {to['sft']} to SFT; chord barrier {bar['dpo']} to DPO, "
            f"{bar['sft']} to SFT"
        )
    return (
        f"- **Contrastive family** ({len(c['replicates'])} replicates, DPO's learning rate): "
        + "; ".join(parts)
        + "."
    )


def _function_line(rho: Mapping[str, Any]) -> str:
    from .beyond_analysis import MEASURES

    parts = [f"{label} {_pm([r[m]['rho'] for r in rho.values()], '+.2f')}" for m, label in MEASURES.items()]
    return (
        "- **Function space**: Spearman rho with the change in accuracy over methods: "
        + ", ".join(parts)
        + "."
    )


def summary_markdown(record: Mapping[str, Any], items: list[dict[str, Any]]) -> str:
    """This run's numbers and the findings' verdicts, as Markdown."""
    counts = {v: sum(f["verdict"] == v for f in items) for v in (HOLDS, FAILS, INCONCLUSIVE)}
    lines = [
        f"Profile `{record['profile']}`, {len(record['replicates'])} replicates.",
        "",
        _dose_line(record["dose"]),
        _trajectory_line(record["trajectories"]),
        _contrastive_line(record["contrastive"]),
        _function_line(record["function_space"]["rho"]),
        f"- **Findings**: {counts[HOLDS]} hold, {counts[FAILS]} do not hold, {counts[INCONCLUSIVE]} inconclusive:",
        *[f"  - *{f['verdict']}* ({f['reason']}): {f['sentence']}" for f in items],
    ]
    return "\n".join(lines)
