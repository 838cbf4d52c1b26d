"""Sentences of chapters 3, 4, 7 and 8 written from the run's own results (issue 14.1).

The analysis chapters' summaries and the few numbers their prose quotes: the geometry of the
updates, the barriers between them, the claims' verdicts. Every number comes from a chapter's
saved results (`helpers.results`) or, for the study, from `data/study.yaml`; see helpers.prose
for the formats and the glue helpers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .prose import brackets, bullets, glue_study, glue_values, num, show
from .reproduction_read import _pair  # a pair table's entry stored as "a-b" or "b-a"
from .spread import summarise

# The chapters import this module alone (their import cells are at the length limit), so it
# hands on the glue and display helpers of helpers.prose.
__all__ = [
    "connectivity_summary",
    "findings_summary",
    "geometry_summary",
    "glue_connectivity",
    "glue_study",
    "glue_values",
    "show",
    "study_barriers",
]

Summary = Mapping[str, Any]  # {mean, min, max, n, values}: one measure over replicates


def _f3(x: float) -> str:
    return f"{x:.3f}"


def _values(summary: Summary) -> list[float]:
    """The per-replicate values of a summary (the mean alone when it has none)."""
    return list(summary.get("values") or [summary["mean"]])


def in_every_replicate(counts: Mapping[str, tuple[int, int]]) -> dict[str, list[str]]:
    """Names sorted by (replicates it held in, replicates measured): held in every measured
    replicate, in none, or in some (inconclusive); a name measured in none is left out."""
    return {
        "every": [k for k, (c, n) in counts.items() if n and c == n],
        "none": [k for k, (c, n) in counts.items() if n and c == 0],
        "some": [k for k, (c, n) in counts.items() if 0 < c < n],
    }


def _split_line(groups: Mapping[str, list[str]], every: str, none: str) -> str:
    parts = []
    if groups["every"]:
        parts.append(f"{every} in every replicate: {', '.join(groups['every'])}")
    if groups["none"]:
        parts.append(f"{none} in every replicate: {', '.join(groups['none'])}")
    if groups["some"]:
        parts.append(f"inconclusive (the replicates disagree): {', '.join(groups['some'])}")
    return "; ".join(parts) if parts else "nothing to compare"


# --- chapter 3 ---------------------------------------------------------------------------


def geometry_summary(out: Mapping[str, Any], reference: str = "sft", floor: str = "sft_order") -> str:
    """Chapter 3's summary: cosines and angles to `reference`, set against the rerun `floor`
    and chance, the orthogonal fraction of offline GRPO in its three readings, effective ranks."""
    geometry, per_method = out["summary"]["geometry"], out["summary"]["per_method"]
    chance = out.get("chance", {}).get("measures", {})
    names = [n for n in per_method if n != reference]
    n_rep = out.get("replicates", 1)
    cos = {n: s for n in names if (s := _pair(geometry["global_cosine"], reference, n)) is not None}
    lines = [
        f"{num(n_rep)} replicates, {num(len(out['layers']))} layers; numbers are the mean over "
        "replicates [smallest, largest].",
        f"Global cosine to {reference}: "
        + ", ".join(f"{n} {brackets(s, _f3)}" for n, s in cos.items())
        + ".",
    ]
    if "global_cosine" in chance:
        band = chance["global_cosine"]
        lines.append(
            f"Two random updates of the same shapes: cosine {_f3(band['lo'])} to {_f3(band['hi'])} (5-95%)."
        )
    if floor in cos:
        floor_values = _values(cos[floor])
        below = {}
        for name, s in cos.items():
            # a control trained in one replicate only has None for the others: compare where both exist
            both = zip(_values(s), floor_values, strict=True)
            pairs = [(v, f) for v, f in both if v is not None and f is not None]
            if name != floor:
                below[name] = (sum(v < f for v, f in pairs), len(pairs))
        lines.append(
            f"Further from {reference} than its rerun {floor} ({brackets(cos[floor], _f3)}), "
            + _split_line(in_every_replicate(below), "lower cosine", "not lower")
            + "."
        )
    angle = {n: s for n in names if (s := _pair(geometry["median_smallest_angle"], reference, n)) is not None}
    if angle:
        text = ", ".join(f"{n} {brackets(s, lambda x: num(x, 3))}" for n, s in angle.items())
        chance_angle = chance.get("angle_min_median", {}).get("mean")
        lines.append(
            f"Median smallest principal angle to {reference} (deg): {text}"
            + (f"; chance {num(chance_angle, 3)}." if chance_angle is not None else ".")
        )
    readings = {"span": "", "top-k": "_top_k", "direction": "_direction"}
    for grpo in ("grpo", "grpo_paper"):
        outside = {
            r: geometry.get(f"orthogonal_fraction{s}", {}).get(f"{grpo}-{reference}")
            for r, s in readings.items()
        }
        if all(v is not None for v in outside.values()):
            text = ", ".join(f"{r} {brackets(v, _f3)}" for r, v in outside.items())
            lines.append(f"Share of {grpo}'s update outside {reference}'s, in the three readings: {text}.")
    ranks = {n: m["effective_rank_median"] for n, m in per_method.items() if "effective_rank_median" in m}
    if ranks:
        text = ", ".join(f"{n} {brackets(s, lambda x: num(x, 3))}" for n, s in ranks.items())
        lines.append(f"Effective rank of the update (median over modules): {text}.")
    return bullets(lines)


# --- chapter 4 ---------------------------------------------------------------------------


def study_barriers(points: Sequence[float]) -> dict[str, float]:
    """Both barriers of the study's loss values along a path, taken as evenly spaced in t
    (the study does not give the t of each point)."""
    from .connectivity import barrier

    ts = [i / (len(points) - 1) for i in range(len(points))]
    return {kind: barrier(ts, list(points), kind=kind) for kind in ("chord", "endpoint_mean")}


def glue_connectivity(study: Mapping[str, dict] | None = None) -> dict[str, str]:
    """Glue the numbers chapter 4's prose quotes: both barriers of the study's RIFT-to-DPO values
    (`lmc_study_chord`, `lmc_study_endpoint_mean`), the findings' barrier margin and the
    saturation level of a loss."""
    from .claims import BARRIER_MARGIN
    from .connectivity import SATURATED_NATS
    from .study import load_study

    study = load_study() if study is None else study
    rift_dpo = study_barriers(study["lmc_ce.rift_dpo"]["value"])
    values = {f"lmc_study_{kind}": num(v, 3) for kind, v in rift_dpo.items()}
    values |= {"barrier_margin": num(BARRIER_MARGIN), "saturated_nats": num(SATURATED_NATS)}
    glue_values(values)
    return values


def is_control_pair(pair: str, reference: str = "sft") -> bool:
    """A path between `reference` and one of its own reruns (sft-sft_order, sft-sft_seed)."""
    a, b = pair.split("-", 1)
    return (
        reference in (a, b) and {a, b} - {reference} <= {f"{reference}_order", f"{reference}_seed"} and a != b
    )


def separated_counts(
    per_replicate: Sequence[Mapping[str, float]], margin: float, reference: str = "sft"
) -> tuple[dict[str, tuple[int, int]], list[float | None]]:
    """For each method pair, (replicates whose barrier exceeds that replicate's largest control
    barrier, a path between `reference` and its reruns, plus `margin`; replicates with a bar),
    and each replicate's bar."""
    counts: dict[str, tuple[int, int]] = {}
    bars: list[float | None] = []
    for barriers in per_replicate:
        controls = [v for p, v in barriers.items() if is_control_pair(p, reference)]
        bar = max(controls) + margin if controls else None
        bars.append(bar)
        for pair, value in barriers.items():
            if not is_control_pair(pair, reference) and bar is not None:
                held, measured = counts.get(pair, (0, 0))
                counts[pair] = (held + int(value > bar), measured + 1)
    return counts, bars


def connectivity_summary(out: Mapping[str, Any], margin: float | None = None, reference: str = "sft") -> str:
    """Chapter 4's summary: the chord barriers on the loss the claims read, which paths clear
    the control bar (`margin` above the SFT reruns', by default the findings') in every
    replicate, and the largest barrier of each definition and loss."""
    if margin is None:
        from .claims import BARRIER_MARGIN as margin
    measure = out["claim_measure"]
    reps = out["per_replicate"]
    n = len(reps)
    lines = [
        f"{num(out['n_problems'])} held-out problems, {num(n)} replicates; the claims read `{measure}`. "
        "Numbers are nats/token, the mean over replicates [smallest, largest]."
    ]
    chord = [rep["barrier_all"][measure] for rep in reps]
    pairs = list(chord[0])
    summary = {p: summarise([c[p] for c in chord]) for p in pairs}
    lines.append(
        f"Chord barrier on `{measure}`: "
        + ", ".join(f"{p} {brackets(s, lambda x: num(x, 3))}" for p, s in summary.items())
        + "."
    )
    counts, bars = separated_counts(chord, margin, reference)
    if all(b is None for b in bars):
        lines.append("No path between SFT and its reruns was measured: no bar to judge a barrier against.")
    else:
        bar_text = ", ".join("n/a" if b is None else num(b, 3) for b in bars)
        lines.append(
            f"The bar a path must clear (largest SFT-rerun barrier + {num(margin)}), per replicate: {bar_text}; "
            + _split_line(in_every_replicate(counts), "separated", "not separated")
            + "."
        )
    for kind, key in (("chord", "barrier_all"), ("endpoint-mean", "barrier_endpoint_mean_all")):
        for loss in reps[0][key]:
            values = {p: summarise([rep[key][loss][p] for rep in reps]) for p in reps[0][key][loss]}
            top = max(values, key=lambda p: values[p]["mean"])
            lines.append(
                f"Largest {kind} barrier on `{loss}`: {top}, {brackets(values[top], lambda x: num(x, 3))}."
            )
    return bullets(lines)


# --- chapter 7 ---------------------------------------------------------------------------

_FORMS = {"study_forms": "the study's forms of RIFT and GRPO", "published_forms": "the published forms"}


def _held(verdicts: Sequence[str]) -> str:
    return f"holds in {sum(v == 'holds' for v in verdicts)} of {len(verdicts)}"


def findings_summary(out: Mapping[str, Any]) -> str:
    """Chapter 7's summary: each claim's verdict (in how many replicates it held) in both forms,
    the criteria the replicates disagree on, the definitions that change a verdict, the reading
    that reproduces the study's figures and how many of its patterns reproduce."""
    lines = [f"{num(out['replicates'])} replicates; a claim holds only when it holds in every one."]
    for form, words in _FORMS.items():
        claims = out["claims"].get(form, [])
        if not claims:
            continue
        text = "; ".join(f"({c['id']}) {c['verdict']} ({_held(c['verdicts'])})" for c in claims)
        split = [
            f"({c['id']}) {k['name']}, met in {sum(k['ok'])} of {len(k['ok'])}"
            for c in claims
            if c["verdict"] == "inconclusive"
            for k in c["checks"]
            if 0 < sum(k["ok"]) < len(k["ok"])
        ]
        disagree = f" The replicates disagree on: {'; '.join(split)}." if split else ""
        lines.append(f"With {words}: {text}.{disagree}")
    for form, words in _FORMS.items():
        by_claim: dict[str, dict[str, str]] = {}
        for d in out.get("definitions", {}).get(form, []):
            by_claim.setdefault(d["claim"], {})[f"{d['reading']}/{d['barrier_kind']}"] = d["verdict"]
        moved = [
            f"({c}) " + ", ".join(f"{k}: {v}" for k, v in defs.items())
            for c, defs in by_claim.items()
            if len(set(defs.values())) > 1
        ]
        if by_claim:
            lines.append(
                f"Definitions that change a verdict ({words}): "
                + ("; ".join(moved) if moved else "none, every reading and barrier gives the same verdicts")
                + "."
            )
    for m in out.get("reading_match", []):
        hits = [r for r, v in m["readings"].items() if v["reproduces"]]
        lines.append(
            f"The study's {m['pair']} fraction {num(m['fraction'])} (cosine {num(m['cosine'])}) is reproduced by "
            + (f"the {' and '.join(hits)} reading{'s' if len(hits) > 1 else ''}" if hits else "no reading")
            + "."
        )
    patterns = out.get("reproduction", [])
    if patterns:
        kinds = ("same", "reversed", "not at this scale", "mixed")
        counts = ", ".join(f"{sum(p['verdict'] == k for p in patterns)} {k}" for k in kinds)
        same = [p["pattern"] for p in patterns if p["verdict"] == "same"]
        lines.append(
            f"Of the study's {len(patterns)} patterns: {counts}"
            + (f"; the same: {'; '.join(same)}" if same else "")
            + "."
        )
    return bullets(lines)
