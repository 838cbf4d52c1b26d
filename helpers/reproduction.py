"""What reproduces: each of the study's patterns with this run's value and "same", "reversed" or
"not at this scale".

A pattern is a comparison the study reports (the base beats the five, DFT is further from SFT
than the reward-weighted methods, ...), not a number: a million-parameter model cannot give
the study's values, but it can show the same ordering, the opposite one, or neither. Each
pattern function reads one run's results and returns a record with its verdict; the named
thresholds below say when a difference counts. `reproduction_table` takes one run or a list
of replicates: a pattern is "same" (or "reversed") only when it is in every replicate, else
"mixed".

`results` is what chapter 07 reads: `helpers.results.load_results(profile)` (the chapters'
JSON keyed by notebook; pass `helpers.headline.rename_methods(results)` for the study's forms of
RIFT and GRPO). Chapter 07's merged `ours` dict (geometry, connectivity, cka, evaluation) is
also accepted; the top-1 output alignment then shows as "not measured" (it lives in chapter
03's `pairs` and `chance`, outside `ours`). Keys read:

  03_delta_geometry.geometry.global_cosine[pair], .orthogonal_fraction[b-a] (ordered, span),
      .orthogonal_fraction_by_layer[b-a]; .pairs[{a, b, top1_output_mean}];
      .chance.measures.top1_output_mean.mean
  04_mode_connectivity.paths[pair][measure] (or connectivity.curves)
  05_cka.cka.last_layer[pair]
  06_evaluation.evaluation.accuracy[method], .mcnemar_p[pair]
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .claims import (
    BARRIER_MARGIN,
    CKA_DROP,
    CLUSTER,
    COLINEAR_COSINE,
    COLINEAR_MARGIN,
    CONTROL_PATHS,
    CONTROLS,
    LARGE_ORTHOGONAL,
    MCNEMAR_ALPHA,
    MIN_COSINE_GAP,
    NEAR_ORTHOGONAL_COSINE,
    ORTHOGONAL_MARGIN,
    REWARD_WEIGHTED,
    late_count,
)
from .lmc_measures import CLAIM_MEASURE
from .reproduction_read import (
    MIXED,
    NOT_AT_SCALE,
    NOT_MEASURED,  # noqa: F401 (re-exported: tests and chapter 07 read it from here)
    REVERSED,
    SAME,
    _all_beat,
    _all_signs,
    _chapters,
    _cos,
    _get,
    _num,
    _orth,
    _pair,
    _path_barrier,
    _record,
    _signed,
    _top1,
)
from .study import load_study

FIVE = ("sft", "rft", "dft", "rift", "grpo")
OUTSIDE = ("dft", "grpo", "dpo")  # the methods the study finds outside the SFT/RFT/RIFT cluster

# A rise of the orthogonal fraction with depth counts beyond 0.05: the study's own rise is 0.12
# to 0.19 (0.67 globally, 0.79-0.86 in the last five blocks), and its five late blocks spread
# over 0.07, so a change under 0.05 is within one layer's wobble.
DEPTH_MARGIN = 0.05
# DFT's top-1 output alignment to the cluster is judged against the midpoint between the
# cluster's own alignment and that of unrelated updates (chance): the study's DFT (0.64-0.67)
# is well above its midpoint (0.97-0.98 and DPO's 0.11: 0.54). Within 0.05 of it is neither:
# the study's pairs of one kind spread over 0.01-0.03.
TOP1_MARGIN = 0.05
# "Aligned with SFT" (the reverse of near-orthogonal): a cosine of at least 0.5 (60 deg), more
# along SFT's update than across it; the study's nearest non-cluster method (GRPO) is at 0.74.
ALIGNED_COSINE = 0.5


def accuracy_base_vs_five(r, study) -> dict[str, Any]:
    """The study's base model is more accurate than each of the five offline losses."""
    got = _all_beat(r, "base", FIVE)
    return _record(
        "accuracy_base_vs_five",
        "the base model beats SFT, RFT, DFT, RIFT and offline GRPO",
        ["gsm8k.base", "gsm8k.five"],
        study,
        got["ours"],
        lambda: _all_signs(got["signs"]),
        f"same: the base beats each of the five (higher accuracy, exact McNemar p < {MCNEMAR_ALPHA}); "
        "reversed: each of the five beats the base; else not at this scale",
    )


def accuracy_dpo_best(r, study) -> dict[str, Any]:
    """DPO is more accurate than each of the five."""
    got = _all_beat(r, "dpo", FIVE)
    return _record(
        "accuracy_dpo_best",
        "DPO beats each of the five other losses",
        ["gsm8k.dpo", "gsm8k.five", "mcnemar.dpo_vs_each"],
        study,
        got["ours"],
        lambda: _all_signs(got["signs"]),
        f"same: DPO beats each of the five (exact McNemar p < {MCNEMAR_ALPHA}); reversed: each of the "
        "five beats DPO; else not at this scale",
    )


def cluster_colinear(r, study) -> dict[str, Any]:
    """SFT, RFT and RIFT make nearly colinear updates: closer to each other than to anything else."""
    within = [_cos(r, a, b) for a, b in (("sft", "rft"), ("sft", "rift"), ("rft", "rift"))]
    outside = [_cos(r, a, b) for a in CLUSTER for b in OUTSIDE]
    rerun = _cos(r, "sft", "sft_order")
    ours = {
        "min cosine within SFT/RFT/RIFT": None if None in within else min(within),
        "max cosine of the cluster to DFT/GRPO/DPO": None if None in outside else max(outside),
        "cosine sft-sft_order (noise floor)": rerun,
    }
    floor = COLINEAR_COSINE if rerun is None else rerun - COLINEAR_MARGIN

    def verdict() -> str:
        inner, outer = min(within), max(outside)
        if outer > inner + MIN_COSINE_GAP:
            return REVERSED
        return SAME if inner >= floor else NOT_AT_SCALE

    if rerun is None:
        ours.pop("cosine sft-sft_order (noise floor)")
    return _record(
        "cluster_colinear",
        "SFT, RFT and RIFT make nearly colinear updates",
        ["global_cosine.sft_rft", "global_cosine.sft_rift", "global_cosine.rft_rift"],
        study,
        ours,
        verdict,
        f"same: every cluster cosine at least SFT's own rerun's - {COLINEAR_MARGIN} (>= {COLINEAR_COSINE} "
        f"without a rerun); reversed: a method outside is closer to a cluster member than the least "
        f"colinear cluster pair, by more than {MIN_COSINE_GAP}; else not at this scale",
    )


def dft_further(r, study) -> dict[str, Any]:
    """DFT's update is further from SFT's than any reward-weighted method's (RFT, RIFT, GRPO)."""
    rw = [_cos(r, m, "sft") for m in REWARD_WEIGHTED]
    dft = _cos(r, "dft", "sft")
    ours = {"cosine dft-sft": dft, "min cosine to SFT of RFT/RIFT/GRPO": None if None in rw else min(rw)}
    return _record(
        "dft_further",
        "DFT diverges from SFT further than any reward-weighted method",
        ["global_cosine.dft_sft", "global_cosine.grpo_sft_cluster", "smallest_angle.sft_dft"],
        study,
        ours,
        lambda: (
            SAME
            if dft < min(rw) - MIN_COSINE_GAP
            else REVERSED
            if dft > max(rw) + MIN_COSINE_GAP
            else NOT_AT_SCALE
        ),
        f"same: DFT's cosine to SFT below every reward-weighted method's by more than {MIN_COSINE_GAP}; "
        "reversed: above every one's by as much; else not at this scale",
    )


def dft_top1_output(r, study) -> dict[str, Any]:
    """DFT keeps most of the cluster's top output direction (closer to the cluster than to chance)."""
    dft = [_top1(r, "dft", m) for m in CLUSTER]
    within = [_top1(r, a, b) for a, b in (("sft", "rft"), ("sft", "rift"), ("rft", "rift"))]
    chance = _num(_get(r, "03_delta_geometry", "chance", "measures", "top1_output_mean", "mean"))
    ours = {
        "top-1 output alignment DFT to the cluster": None if None in dft else statistics.fmean(dft),
        "within the cluster": None if None in within else statistics.fmean(within),
        "chance": chance,
    }

    def verdict() -> str:
        mid = (ours["within the cluster"] + chance) / 2
        return _signed(ours["top-1 output alignment DFT to the cluster"] - mid, TOP1_MARGIN)

    return _record(
        "dft_top1_output",
        "DFT shares most of the cluster's top-1 output direction",
        ["top1_output.dft", "top1_output.sft_cluster", "top1_output.dpo"],
        study,
        ours,
        verdict,
        f"same: DFT's mean |<u1, u1'>| to SFT/RFT/RIFT above the midpoint of the cluster's own and chance "
        f"by more than {TOP1_MARGIN}; reversed: below it by as much; else not at this scale",
    )


def grpo_orthogonal(r, study) -> dict[str, Any]:
    """Offline GRPO's update is mostly outside SFT's column space, more than an SFT rerun's."""
    frac, rerun = _orth(r, "grpo", "sft"), _orth(r, "sft_order", "sft")
    ours = {"orthogonal fraction grpo-sft": frac, "sft_order-sft (noise floor)": rerun}
    if rerun is None:
        ours.pop("sft_order-sft (noise floor)")
    return _record(
        "grpo_orthogonal",
        "offline GRPO adds a large component orthogonal to SFT",
        ["orthogonal_fraction.grpo_sft"],
        study,
        ours,
        lambda: (
            SAME
            if frac >= LARGE_ORTHOGONAL and (rerun is None or frac > rerun + ORTHOGONAL_MARGIN)
            else NOT_AT_SCALE
        ),
        f"same: span-reading fraction >= {LARGE_ORTHOGONAL} and above SFT's rerun's by {ORTHOGONAL_MARGIN} "
        "(when measured); else not at this scale (this pattern has no reverse)",
    )


def grpo_orthogonal_depth(r, study) -> dict[str, Any]:
    """GRPO's orthogonal fraction to SFT is larger in the late layers than over the whole model."""
    frac, layers = _orth(r, "grpo", "sft"), _orth(r, "grpo", "sft", by_layer=True)
    late = statistics.fmean(layers[-late_count(len(layers)) :]) if layers else None
    ours = {"orthogonal fraction grpo-sft, global": frac, "late layers": late}
    return _record(
        "grpo_orthogonal_depth",
        "GRPO's orthogonal fraction rises in the late layers",
        ["orthogonal_fraction.grpo_sft", "orthogonal_fraction.grpo_sft_last5"],
        study,
        ours,
        lambda: _signed(late - frac, DEPTH_MARGIN),
        f"same: the mean over the late layers (the study's share 5/36) above the global fraction by more than "
        f"{DEPTH_MARGIN}; reversed: below it by as much; else not at this scale",
    )


def dpo_near_orthogonal(r, study) -> dict[str, Any]:
    """DPO's update is near-orthogonal to SFT's, RFT's and RIFT's."""
    cos = [_cos(r, "dpo", m) for m in CLUSTER]
    ours = {"max |cosine| of DPO to SFT/RFT/RIFT": None if None in cos else max(abs(c) for c in cos)}
    return _record(
        "dpo_near_orthogonal",
        "DPO sits in a near-orthogonal subspace",
        ["global_cosine.dpo_sft_cluster", "smallest_angle.sft_dpo"],
        study,
        ours,
        lambda: (
            SAME
            if max(abs(c) for c in cos) <= NEAR_ORTHOGONAL_COSINE
            else REVERSED
            if min(cos) >= ALIGNED_COSINE
            else NOT_AT_SCALE
        ),
        f"same: |cosine| to each of SFT/RFT/RIFT <= {NEAR_ORTHOGONAL_COSINE}; reversed: cosine to each "
        f">= {ALIGNED_COSINE} (aligned); else not at this scale",
    )


def barriers(r, study, measure: str = CLAIM_MEASURE, kind: str = "chord") -> dict[str, Any]:
    """DPO is separated from the cluster by a barrier while GRPO shares SFT's basin."""
    dpo = _path_barrier(r, "rift", "dpo", measure, kind)
    dpo_path = "rift-dpo"
    if dpo is None:  # the study's path is RIFT to DPO; SFT to DPO stands in for it
        dpo, dpo_path = _path_barrier(r, "sft", "dpo", measure, kind), "sft-dpo"
    grpo = _path_barrier(r, "sft", "grpo", measure, kind)
    controls = [
        v for v in (_path_barrier(r, *p.split("-"), measure, kind) for p in CONTROL_PATHS) if v is not None
    ]
    bar = (max(controls) if controls else 0.0) + BARRIER_MARGIN
    ours = {f"barrier {dpo_path}": dpo, "barrier sft-grpo": grpo, "a barrier must exceed": bar}

    def verdict() -> str:
        if dpo > bar and grpo <= bar:
            return SAME
        return REVERSED if grpo > bar and dpo <= bar else NOT_AT_SCALE

    return _record(
        "barriers",
        f"a barrier between RIFT and DPO, none between SFT and GRPO ({kind} barrier of {measure})",
        ["lmc_ce.rift_dpo", "lmc_ce.sft_grpo"],
        study,
        ours,
        verdict,
        f"a barrier = above the largest SFT-rerun barrier + {BARRIER_MARGIN} nats/token (the margin alone "
        "without reruns); same: DPO's path has one and GRPO's not; reversed: the other way; else not at "
        "this scale",
    )


def cka_drop(r, study) -> dict[str, Any]:
    """DPO lowers last-layer CKA: its pairs well below the pairs of the other methods."""
    table = _get(r, "05_cka", "cka", "last_layer") or {}
    dpo = [_num(_pair(table, m, "dpo")) for m in ("grpo", "dft")]
    skip = {"dpo", "base", *CONTROLS}
    others = [_num(v) for k, v in table.items() if not skip & set(k.split("-"))]
    others = [v for v in others if v is not None]
    ours = {
        "last-layer CKA of GRPO-DPO, DFT-DPO": None if None in dpo else statistics.fmean(dpo),
        "of the pairs without DPO": statistics.fmean(others) if others else None,
    }
    return _record(
        "cka_drop",
        "DPO lowers late-layer CKA",
        ["cka.dpo_late_layers", "cka.grpo_sft_rift_last_layer", "cka.sft_rift"],
        study,
        ours,
        lambda: _signed(
            ours["of the pairs without DPO"] - ours["last-layer CKA of GRPO-DPO, DFT-DPO"], CKA_DROP
        ),
        f"same: DPO's pairs at least {CKA_DROP} below the mean of the method pairs without DPO (base and "
        "controls left out); reversed: above it by as much; else not at this scale",
    )


PATTERNS: tuple[Callable[..., dict[str, Any]], ...] = (
    accuracy_base_vs_five,
    accuracy_dpo_best,
    cluster_colinear,
    dft_further,
    dft_top1_output,
    grpo_orthogonal,
    grpo_orthogonal_depth,
    dpo_near_orthogonal,
    barriers,
    cka_drop,
)


def over_replicates(
    pattern: Callable[..., dict[str, Any]], replicates: Sequence[Mapping[str, Any]], study=None, **kw: Any
) -> dict[str, Any]:
    """One pattern over replicates: its verdict when every replicate gives the same one, else "mixed"
    (a replicate that could not measure it counts as disagreeing). `ours` lists each replicate's."""
    if not replicates:
        raise ValueError("over_replicates: no replicates given")
    study = load_study() if study is None else study
    records = [pattern(_chapters(r), study, **kw) for r in replicates]
    verdicts = [rec["verdict"] for rec in records]
    return {
        **records[0],
        "ours": [rec["ours"] for rec in records],
        "verdict": verdicts[0] if len(set(verdicts)) == 1 else MIXED,
        "replicate_verdicts": verdicts,
    }


def reproduction(
    results: Mapping[str, Any] | Sequence[Mapping[str, Any]], study=None, **kw: Any
) -> list[dict]:
    """Every pattern's record for one run (a mapping) or for replicates (a list of them).
    `kw` (measure, kind) goes to the barrier pattern."""
    replicates = [results] if isinstance(results, Mapping) else list(results)
    study = load_study() if study is None else study
    return [over_replicates(p, replicates, study, **(kw if p is barriers else {})) for p in PATTERNS]


def _fmt(ours: Mapping[str, Any]) -> str:
    return "; ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in ours.items())


def reproduction_table(results, study=None, **kw: Any):
    """The patterns as a DataFrame: pattern, the study's numbers, ours (per replicate), verdict."""
    import pandas as pd

    records = reproduction(results, study, **kw)
    rows = [
        {
            "pattern": rec["pattern"],
            "study": rec["study"],
            "ours": " | ".join(_fmt(o) for o in rec["ours"]),
            "verdict": rec["verdict"],
        }
        for rec in records
    ]
    return pd.DataFrame(rows, index=[rec["key"] for rec in records])
