"""The study's claims (i)-(iv) as criteria: named thresholds, and one function per claim.

Each claim function reads our numbers through `_Reader` (helpers.claim_reader: it remembers what is missing)
and returns its record with the checks it ran; helpers.findings evaluates them all and
documents the keys of `ours`. Where the study's claim is about colinearity or barriers, the
criterion is relative to the noise floor the controls measure (an SFT rerun with another
data order, one from another LoRA seed), not to a fixed number.
"""

from __future__ import annotations

from typing import Any

from .claim_reader import (  # noqa: F401  (BARRIER_KINDS, CONTROL_PATHS, late_count: re-exported)
    BARRIER_KINDS,
    CONTROL_PATHS,
    LATE_LAYER_SHARE,
    _finite,
    _late_mean,
    _Reader,
    late_count,
    suffix,
)
from .study import format_entry

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"

# "Two cosines differ" only beyond 0.02: the spread of the study's own near-identical
# cluster (0.967-0.977) is about that size.
MIN_COSINE_GAP = 0.02
# "Nearly colinear" = at least as colinear as the same method rerun with another data order,
# less this margin: a cosine within MIN_COSINE_GAP of the rerun's cannot be told from it.
COLINEAR_MARGIN = MIN_COSINE_GAP
# Only when no rerun was measured: an absolute "nearly colinear", within ~18 deg. The study's
# cluster is at 0.967-0.977 and the next method (GRPO) at 0.74; 0.95 separates them.
COLINEAR_COSINE = 0.95
# "Not different by McNemar": raw p at the usual 5% level; no Holm here, because for a
# claim of *no* difference the uncorrected test is the stricter one.
MCNEMAR_ALPHA = 0.05
# "A large orthogonal component": most of the update's norm outside SFT (in each reading).
LARGE_ORTHOGONAL = 0.5
# The orthogonal fraction must exceed that of an SFT rerun (other data order) by this
# much, so that it is not just the rotation noise of training gives any update.
ORTHOGONAL_MARGIN = 0.1
# "A barrier" = a rise above the largest barrier between SFT and its own reruns (other data
# order, other seed: same loss, so any barrier there is harmless) by more than 0.05 nats/token,
# which is below the spread of the answer CE between methods of one basin (the study's
# endpoints differ by 0.2). "No barrier" is its negation.
BARRIER_MARGIN = 0.05
# Only when no control path was measured: an absolute "no barrier" (the margin above zero).
NO_BARRIER = BARRIER_MARGIN
# "Near-orthogonal" updates: |cosine| at most 0.2 (beyond 78 deg); the study's DPO is at 0.06.
NEAR_ORTHOGONAL_COSINE = 0.2
# DPO "lowers" late-layer CKA: its pairs at least 0.1 below the mean of the other pairs
# (the study: about 0.45 against 0.85 to above 0.99).
CKA_DROP = 0.1

CLAIMS = {
    "i": "SFT, RFT and RIFT make nearly colinear updates with accuracies not different by McNemar.",
    "ii": "DFT diverges further in direction than any reward-weighted method.",
    "iii": "Offline GRPO adds a large component orthogonal to SFT (more in late layers) "
    "while staying in SFT's loss basin (no barrier).",
    "iv": "DPO sits in a near-orthogonal subspace, has a mode-connectivity barrier, and lowers late-layer CKA.",
}
CLUSTER = ("sft", "rft", "rift")
REWARD_WEIGHTED = ("rft", "rift", "grpo")
CONTROLS = ("sft_order", "sft_seed", "dpo_samelr", "online_grpo")


def _result(claim_id, criterion, ours, study, study_keys, checks, reader, notes) -> dict[str, Any]:
    """One claim's record; the verdict follows from the checks, or is "not measured"."""
    if reader.missing:
        verdict = NOT_MEASURED
    else:
        verdict = HOLDS if all(c["ok"] for c in checks) else FAILS
    entries = {k: study[k] for k in study_keys if k in study}
    return {
        "id": claim_id,
        "claim": f"({claim_id}) {CLAIMS[claim_id]}",
        "criterion": criterion,
        "ours": {k: v for k, v in ours.items() if v is not None},
        "study": {k: e["value"] for k, e in entries.items()},
        "study_text": {k: format_entry(e) for k, e in entries.items()},
        "checks": [] if reader.missing else checks,
        "verdict": verdict,
        "reading": reader.reading,
        "barrier_kind": reader.barrier_kind,
        "missing": reader.missing,
        "notes": notes,
    }


def _check(
    name: str,
    test: str,
    value: Any,
    ok: bool,
    threshold: float | None = None,
    above: bool = True,
    measure: float | None = None,
) -> dict[str, Any]:
    """One criterion, `name`d the same in every replicate; with a threshold, also its `margin`: how
    far the value (or `measure`, when the value is a record) clears it on the passing side (`above`
    it, or below it), negative when it misses."""
    out = {"name": name, "test": test, "value": value, "ok": bool(ok)}
    compared = value if measure is None else measure
    if threshold is not None and _finite(compared) and _finite(threshold):
        out["threshold"] = threshold
        out["margin"] = (compared - threshold) if above else (threshold - compared)
    return out


def claim_i(r: _Reader, study) -> dict[str, Any]:
    pairs = [("sft", "rft"), ("sft", "rift"), ("rft", "rift")]
    ours: dict[str, Any] = {}
    for a, b in pairs:
        ours[f"cosine {a}-{b}"] = r.pair("geometry", "global_cosine", a, b)
        ours[f"mcnemar p {a}-{b}"] = r.pair("evaluation", "mcnemar_p", a, b)
    for a, b in pairs[:2]:
        ours[f"smallest angle {a}-{b}"] = r.pair("geometry", "median_smallest_angle", a, b, required=False)
    for m in CLUSTER:
        ours[f"accuracy {m}"] = (r.table("evaluation", "accuracy")).get(m)
    order = r.pair("geometry", "global_cosine", "sft", "sft_order", required=False)
    seed = r.pair("geometry", "global_cosine", "sft", "sft_seed", required=False)
    ours.update({"cosine sft-sft_order (noise floor)": order, "cosine sft-sft_seed (other init)": seed})
    checks, notes = [], []
    if order is not None:
        threshold, against = order - COLINEAR_MARGIN, f"SFT rerun's {order:.3f} - {COLINEAR_MARGIN}"
    else:
        threshold, against = COLINEAR_COSINE, f"{COLINEAR_COSINE} (no SFT rerun measured)"
        notes.append("no SFT rerun (sft_order) was measured: colinearity is judged against an absolute 0.95")
    if not r.missing:
        min_cos = min(ours[f"cosine {a}-{b}"] for a, b in pairs)
        min_p = min(ours[f"mcnemar p {a}-{b}"] for a, b in pairs)
        checks = [
            _check(
                "colinear",
                f"min cosine within SFT/RFT/RIFT >= {against}",
                min_cos,
                min_cos >= threshold,
                threshold,
            ),
            _check(
                "same accuracy",
                f"min McNemar p within SFT/RFT/RIFT >= {MCNEMAR_ALPHA}",
                min_p,
                min_p >= MCNEMAR_ALPHA,
                MCNEMAR_ALPHA,
            ),
        ]
    if order is not None and order < COLINEAR_COSINE:
        notes.append(
            f"the SFT rerun itself has cosine {order:.3f} < {COLINEAR_COSINE}: training noise is large here"
        )
    if seed is not None:
        notes.append(
            f"SFT from another LoRA init has cosine {seed:.3f} (study 0.07-0.36): the shared init matters"
        )
    criterion = (
        f"cosine of all three pairs at least that of SFT with its own rerun (other data order) minus "
        f"{COLINEAR_MARGIN} (>= {COLINEAR_COSINE} when no rerun was measured), and exact McNemar p >= "
        f"{MCNEMAR_ALPHA} for all three"
    )
    keys = [
        "global_cosine.sft_rft",
        "global_cosine.sft_rift",
        "global_cosine.rft_rift",
        "claims.i_smallest_angle",
        "smallest_angle.sft_rft",
        "smallest_angle.sft_rift",
        "mcnemar.among_five",
        "controls.seed_cosine",
    ]
    return _result("i", criterion, ours, study, keys, checks, r, notes)


def claim_ii(r: _Reader, study) -> dict[str, Any]:
    ours: dict[str, Any] = {"cosine dft-sft": r.pair("geometry", "global_cosine", "dft", "sft")}
    for m in REWARD_WEIGHTED:
        ours[f"cosine {m}-sft"] = r.pair("geometry", "global_cosine", m, "sft")
    ours["cosine dft-rift"] = r.pair("geometry", "global_cosine", "dft", "rift", required=False)
    angles = {
        m: r.pair("geometry", "median_smallest_angle", m, "sft", required=False)
        for m in ("dft",) + REWARD_WEIGHTED
    }
    ours.update({f"smallest angle {m}-sft": v for m, v in angles.items()})
    checks = []
    if not r.missing:
        closest = min(ours[f"cosine {m}-sft"] for m in REWARD_WEIGHTED)
        dft = ours["cosine dft-sft"]
        checks.append(
            _check(
                "dft furthest (cosine)",
                f"cosine dft-sft < min over RFT/RIFT/GRPO of cosine to SFT - {MIN_COSINE_GAP}",
                {"dft": dft, "min reward-weighted": closest},
                dft < closest - MIN_COSINE_GAP,
                closest - MIN_COSINE_GAP,
                above=False,
                measure=dft,
            )
        )
        if all(v is not None for v in angles.values()):
            widest = max(angles[m] for m in REWARD_WEIGHTED)
            checks.append(
                _check(
                    "dft furthest (angle)",
                    "median smallest angle dft-sft > that of every reward-weighted method",
                    {"dft": angles["dft"], "max reward-weighted": widest},
                    angles["dft"] > widest,
                    widest,
                    measure=angles["dft"],
                )
            )
    criterion = (
        f"DFT's cosine to SFT is lower than every reward-weighted method's (RFT, RIFT, GRPO) by more than "
        f"{MIN_COSINE_GAP}; where angles are measured, its median smallest angle to SFT is also the largest"
    )
    keys = [
        "global_cosine.dft_sft",
        "global_cosine.dft_rift",
        "global_cosine.sft_rft",
        "global_cosine.sft_rift",
        "global_cosine.grpo_sft_cluster",
        "smallest_angle.sft_dft",
        "smallest_angle.sft_grpo",
    ]
    return _result("ii", criterion, ours, study, keys, checks, r, [])


def _barrier_threshold(r: _Reader, notes: list[str]) -> tuple[float, str]:
    """Above what a barrier counts, and the words for it (the largest control barrier + margin)."""
    control, path = r.control_barrier()
    if control is None:
        notes.append("no SFT rerun path was measured: a barrier is judged against 0 instead of a control")
        return NO_BARRIER, f"{NO_BARRIER} (no control path measured)"
    return control + BARRIER_MARGIN, f"{path}'s {control:.3f} + {BARRIER_MARGIN}"


def claim_iii(r: _Reader, study) -> dict[str, Any]:
    frac = r.pair("geometry", f"orthogonal_fraction{r.orth}", "grpo", "sft", ordered=True)
    by_layer = r.pair("geometry", f"orthogonal_fraction{r.orth}_by_layer", "grpo", "sft", ordered=True)
    barrier = r.pair("connectivity", r.barrier_key, "sft", "grpo")
    noise = r.pair(
        "geometry", f"orthogonal_fraction{r.orth}", "sft_order", "sft", ordered=True, required=False
    )
    late = _late_mean(by_layer) if by_layer else None
    ours = {
        "orthogonal fraction grpo-sft": frac,
        "orthogonal fraction grpo-sft, late layers": late,
        "barrier sft-grpo": barrier,
        "orthogonal fraction sft_order-sft (noise floor)": noise,
    }
    checks, notes = [], []
    threshold, against = _barrier_threshold(r, notes)
    if not r.missing:
        checks = [
            _check(
                "large orthogonal",
                f"orthogonal fraction >= {LARGE_ORTHOGONAL}",
                frac,
                frac >= LARGE_ORTHOGONAL,
                LARGE_ORTHOGONAL,
            ),
            _check(
                "more in late layers",
                "late-layer orthogonal fraction > global",
                {"late": late, "global": frac},
                late > frac,
                frac,
                measure=late,
            ),
            _check(
                "no barrier",
                f"barrier sft-grpo <= {against}",
                barrier,
                barrier <= threshold,
                threshold,
                above=False,
            ),
        ]
        if noise is not None:
            checks.append(
                _check(
                    "above the noise floor",
                    f"orthogonal fraction > SFT rerun's + {ORTHOGONAL_MARGIN}",
                    frac,
                    frac > noise + ORTHOGONAL_MARGIN,
                    noise + ORTHOGONAL_MARGIN,
                )
            )
        else:
            notes.append("no SFT rerun (sft_order) was measured: the orthogonal fraction has no noise floor")
    criterion = (
        f"orthogonal fraction ({r.reading} reading) of GRPO to SFT >= {LARGE_ORTHOGONAL} and above an SFT "
        f"rerun's by {ORTHOGONAL_MARGIN} (when measured), larger in the last {LATE_LAYER_SHARE:.0%} of layers "
        f"than globally, and a {r.barrier_kind} barrier on the SFT-GRPO path no more than {BARRIER_MARGIN} "
        "nats/token above the largest SFT-rerun barrier"
    )
    keys = [
        "orthogonal_fraction.grpo_sft",
        "orthogonal_fraction.grpo_sft_last5",
        "claims.iii_orthogonal_fraction",
        "lmc_ce.sft_grpo",
    ]
    return _result("iii", criterion, ours, study, keys, checks, r, notes)


def claim_iv(r: _Reader, study) -> dict[str, Any]:
    cosines = {m: r.pair("geometry", "global_cosine", "dpo", m) for m in CLUSTER}
    barrier = r.pair("connectivity", r.barrier_key, "rift", "dpo", required=False)
    barrier_pair = "rift-dpo"
    if barrier is None:  # the study's path is RIFT to DPO; SFT to DPO stands in for it
        barrier = r.pair("connectivity", r.barrier_key, "sft", "dpo", required=False)
        barrier_pair = "sft-dpo"
    if barrier is None:
        r.missing.append(f"connectivity.{r.barrier_key}[rift-dpo] (or [sft-dpo])")
    dpo_cka = {m: r.pair("cka", "last_layer", m, "dpo") for m in ("grpo", "dft")}
    others = [
        v
        for k, v in r.table("cka", "last_layer").items()
        if "dpo" not in k.split("-") and not any(c in k.split("-") for c in CONTROLS) and _finite(v)
    ]
    if not others:
        r.missing.append("cka.last_layer[<a pair without DPO>]")
    same_lr = r.pair("geometry", "global_cosine", "dpo_samelr", "sft", required=False)
    ours: dict[str, Any] = {f"cosine dpo-{m}": v for m, v in cosines.items()}
    ours[f"barrier {barrier_pair}"] = barrier
    ours.update({f"last-layer CKA {m}-dpo": v for m, v in dpo_cka.items()})
    ours["last-layer CKA, mean of non-DPO pairs"] = sum(others) / len(others) if others else None
    ours["cosine dpo_samelr-sft (same lr control)"] = same_lr
    checks, notes = [], []
    threshold, against = _barrier_threshold(r, notes)
    if not r.missing:
        worst = max(abs(v) for v in cosines.values())
        dpo_mean = sum(dpo_cka.values()) / 2
        ref = ours["last-layer CKA, mean of non-DPO pairs"]
        checks = [
            _check(
                "near-orthogonal",
                f"max |cosine| of DPO to SFT/RFT/RIFT <= {NEAR_ORTHOGONAL_COSINE}",
                worst,
                worst <= NEAR_ORTHOGONAL_COSINE,
                NEAR_ORTHOGONAL_COSINE,
                above=False,
            ),
            _check("barrier", f"barrier {barrier_pair} > {against}", barrier, barrier > threshold, threshold),
            _check(
                "lower late-layer CKA",
                f"mean CKA of GRPO-DPO, DFT-DPO <= mean of non-DPO pairs - {CKA_DROP}",
                dpo_mean,
                dpo_mean <= ref - CKA_DROP,
                ref - CKA_DROP,
                above=False,
            ),
        ]
    if same_lr is not None:
        kind = "also" if abs(same_lr) <= NEAR_ORTHOGONAL_COSINE else "not"
        notes.append(f"DPO at the others' lr has cosine {same_lr:.3f} to SFT: {kind} near-orthogonal")
    notes.append("caveat: the study's DPO runs at a 10x smaller lr and makes about 18 passes over its pairs")
    criterion = (
        f"|cosine| of DPO to SFT, RFT and RIFT <= {NEAR_ORTHOGONAL_COSINE}, a {r.barrier_kind} barrier on the "
        f"RIFT-DPO path (else SFT-DPO) more than {BARRIER_MARGIN} nats/token above the largest SFT-rerun "
        f"barrier, and last-layer CKA of GRPO-DPO and DFT-DPO at least {CKA_DROP} below the mean of the pairs "
        "without DPO"
    )
    keys = [
        "global_cosine.dpo_sft_cluster",
        "lmc_ce.rift_dpo",
        "cka.dpo_late_layers",
        "claims.iv_late_cka",
        "cka.sft_rift",
        "cka.grpo_sft_rift_last_layer",
        "claims.dpo_passes",
    ]
    return _result("iv", criterion, ours, study, keys, checks, r, notes)
