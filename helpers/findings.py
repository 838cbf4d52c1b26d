"""The study's claims (i)-(iv) as code: our measured numbers in, one verdict per claim out.

`ours` is the merged JSON the book's notebooks write. Method names are lowercase
(sft, rft, dft, rift, grpo, dpo; controls sft_order, sft_seed, dpo_samelr, online_grpo
are methods too); a pair is the string "a-b" and is looked up in either order, except
where ordered. Keys read:

  geometry.global_cosine[pair]                 cosine of the flattened updates
  geometry.median_smallest_angle[pair]         deg, median over modules (optional)
  geometry.orthogonal_fraction["b-a"]          ordered: share of b's update outside a's
                                               column space, global
  geometry.orthogonal_fraction_by_layer["b-a"] ordered: the same per layer, in layer order
  connectivity.barrier[pair]                   rise of the loss above the straight line
                                               between the endpoints (nats/token)
  cka.last_layer[pair]                         CKA of last-layer hidden states
  evaluation.accuracy[method]                  fraction correct (reported only)
  evaluation.mcnemar_p[pair]                   raw exact McNemar p
                                               (helpers.evaluate.compare_methods writes this block)

Noise floors (optional, reported and used where present): global_cosine["sft-sft_order"]
(same loss and init, another data order), global_cosine["sft-sft_seed"] (another LoRA
init), orthogonal_fraction["sft_order-sft"], global_cosine["dpo_samelr-sft"].
A claim whose required key is missing (or not a finite number) is "not measured".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .study import format_entry, load_study

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"

# "Nearly colinear": within ~18 deg. The study's cluster is at 0.967-0.977 and the next
# method (GRPO) at 0.74, so 0.95 separates the cluster without asking for its third decimal.
COLINEAR_COSINE = 0.95
# "Not different by McNemar": raw p at the usual 5% level; no Holm here, because for a
# claim of *no* difference the uncorrected test is the stricter one.
MCNEMAR_ALPHA = 0.05
# Two cosines count as different only beyond 0.02: the spread of the study's own
# near-identical cluster (0.967-0.977) is about that size.
MIN_COSINE_GAP = 0.02
# "A large orthogonal component": most of the update's norm outside SFT's column space.
LARGE_ORTHOGONAL = 0.5
# The orthogonal fraction must exceed that of an SFT rerun (other data order) by this
# much, so that it is not just the rotation noise of training gives any update.
ORTHOGONAL_MARGIN = 0.1
# Share of the last layers that count as "late": the study's last five of 36 blocks.
LATE_LAYER_SHARE = 5 / 36
# A loss rise under 0.05 nats/token above the chord is "no barrier": smaller than the
# spread of the answer CE between methods in one basin (the study's endpoints differ by 0.2).
NO_BARRIER = 0.05
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


class _Reader:
    """Reads numbers out of `ours`, remembering every key it could not find."""

    def __init__(self, ours: Mapping[str, Any]):
        self.ours = ours
        self.missing: list[str] = []

    def pair(self, section: str, table: str, a: str, b: str, ordered: bool = False, required: bool = True):
        values = (self.ours.get(section) or {}).get(table) or {}
        keys = [f"{a}-{b}"] if ordered else [f"{a}-{b}", f"{b}-{a}"]
        value = next((values[k] for k in keys if k in values), None)
        if isinstance(value, list):
            ok = bool(value) and all(_finite(v) for v in value)
            value = [float(v) for v in value] if ok else None
        elif not _finite(value):
            value = None
        if value is None and required:
            self.missing.append(f"{section}.{table}[{keys[0]}]")
        return value

    def table(self, section: str, table: str) -> Mapping[str, Any]:
        return (self.ours.get(section) or {}).get(table) or {}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _late_mean(per_layer: list[float]) -> float:
    """Mean over the last LATE_LAYER_SHARE of the layers (at least one)."""
    n = max(1, round(len(per_layer) * LATE_LAYER_SHARE))
    return sum(per_layer[-n:]) / n


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
        "missing": reader.missing,
        "notes": notes,
    }


def _check(test: str, value: Any, ok: bool) -> dict[str, Any]:
    return {"test": test, "value": value, "ok": bool(ok)}


def _claim_i(r: _Reader, study) -> dict[str, Any]:
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
    if not r.missing:
        min_cos = min(ours[f"cosine {a}-{b}"] for a, b in pairs)
        min_p = min(ours[f"mcnemar p {a}-{b}"] for a, b in pairs)
        checks = [
            _check(
                f"min cosine within SFT/RFT/RIFT >= {COLINEAR_COSINE}", min_cos, min_cos >= COLINEAR_COSINE
            ),
            _check(f"min McNemar p within SFT/RFT/RIFT >= {MCNEMAR_ALPHA}", min_p, min_p >= MCNEMAR_ALPHA),
        ]
    if order is not None:
        notes.append(f"an SFT rerun with another data order has cosine {order:.3f} to SFT (noise floor)")
    if seed is not None:
        notes.append(
            f"SFT from another LoRA init has cosine {seed:.3f} (study 0.07-0.36): the shared init matters"
        )
    criterion = f"cosine >= {COLINEAR_COSINE} for all three pairs and exact McNemar p >= {MCNEMAR_ALPHA} for all three"
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


def _claim_ii(r: _Reader, study) -> dict[str, Any]:
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
                f"cosine dft-sft < min over RFT/RIFT/GRPO of cosine to SFT - {MIN_COSINE_GAP}",
                {"dft": dft, "min reward-weighted": closest},
                dft < closest - MIN_COSINE_GAP,
            )
        )
        if all(v is not None for v in angles.values()):
            widest = max(angles[m] for m in REWARD_WEIGHTED)
            checks.append(
                _check(
                    "median smallest angle dft-sft > that of every reward-weighted method",
                    {"dft": angles["dft"], "max reward-weighted": widest},
                    angles["dft"] > widest,
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


def _claim_iii(r: _Reader, study) -> dict[str, Any]:
    frac = r.pair("geometry", "orthogonal_fraction", "grpo", "sft", ordered=True)
    by_layer = r.pair("geometry", "orthogonal_fraction_by_layer", "grpo", "sft", ordered=True)
    barrier = r.pair("connectivity", "barrier", "sft", "grpo")
    noise = r.pair("geometry", "orthogonal_fraction", "sft_order", "sft", ordered=True, required=False)
    late = _late_mean(by_layer) if by_layer else None
    ours = {
        "orthogonal fraction grpo-sft": frac,
        "orthogonal fraction grpo-sft, late layers": late,
        "barrier sft-grpo": barrier,
        "orthogonal fraction sft_order-sft (noise floor)": noise,
    }
    checks, notes = [], []
    if not r.missing:
        checks = [
            _check(f"orthogonal fraction >= {LARGE_ORTHOGONAL}", frac, frac >= LARGE_ORTHOGONAL),
            _check("late-layer orthogonal fraction > global", {"late": late, "global": frac}, late > frac),
            _check(f"barrier sft-grpo <= {NO_BARRIER}", barrier, barrier <= NO_BARRIER),
        ]
        if noise is not None:
            checks.append(
                _check(
                    f"orthogonal fraction > SFT rerun's + {ORTHOGONAL_MARGIN}",
                    {"grpo": frac, "noise floor": noise},
                    frac > noise + ORTHOGONAL_MARGIN,
                )
            )
        else:
            notes.append("no SFT rerun (sft_order) was measured: the orthogonal fraction has no noise floor")
    criterion = (
        f"orthogonal fraction of GRPO to SFT >= {LARGE_ORTHOGONAL} and above an SFT rerun's by "
        f"{ORTHOGONAL_MARGIN} (when measured), larger in the last {LATE_LAYER_SHARE:.0%} of layers than "
        f"globally, and a barrier on the SFT-GRPO path <= {NO_BARRIER} nats/token"
    )
    keys = [
        "orthogonal_fraction.grpo_sft",
        "orthogonal_fraction.grpo_sft_last5",
        "claims.iii_orthogonal_fraction",
        "lmc_ce.sft_grpo",
    ]
    return _result("iii", criterion, ours, study, keys, checks, r, notes)


def _claim_iv(r: _Reader, study) -> dict[str, Any]:
    cosines = {m: r.pair("geometry", "global_cosine", "dpo", m) for m in CLUSTER}
    barrier = r.pair("connectivity", "barrier", "rift", "dpo", required=False)
    barrier_pair = "rift-dpo"
    if barrier is None:  # the study's path is RIFT to DPO; SFT to DPO stands in for it
        barrier = r.pair("connectivity", "barrier", "sft", "dpo", required=False)
        barrier_pair = "sft-dpo"
    if barrier is None:
        r.missing.append("connectivity.barrier[rift-dpo] (or [sft-dpo])")
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
    if not r.missing:
        worst = max(abs(v) for v in cosines.values())
        dpo_mean = sum(dpo_cka.values()) / 2
        ref = ours["last-layer CKA, mean of non-DPO pairs"]
        checks = [
            _check(
                f"max |cosine| of DPO to SFT/RFT/RIFT <= {NEAR_ORTHOGONAL_COSINE}",
                worst,
                worst <= NEAR_ORTHOGONAL_COSINE,
            ),
            _check(f"barrier {barrier_pair} > {NO_BARRIER}", barrier, barrier > NO_BARRIER),
            _check(
                f"mean CKA of GRPO-DPO, DFT-DPO <= mean of non-DPO pairs - {CKA_DROP}",
                {"dpo pairs": dpo_mean, "non-DPO pairs": ref},
                dpo_mean <= ref - CKA_DROP,
            ),
        ]
    if same_lr is not None:
        kind = "also" if abs(same_lr) <= NEAR_ORTHOGONAL_COSINE else "not"
        notes.append(f"DPO at the others' lr has cosine {same_lr:.3f} to SFT: {kind} near-orthogonal")
    notes.append("caveat: the study's DPO runs at a 10x smaller lr and makes about 18 passes over its pairs")
    criterion = (
        f"|cosine| of DPO to SFT, RFT and RIFT <= {NEAR_ORTHOGONAL_COSINE}, a barrier > {NO_BARRIER} "
        f"nats/token on the RIFT-DPO path (else SFT-DPO), and last-layer CKA of GRPO-DPO and DFT-DPO "
        f"at least {CKA_DROP} below the mean of the pairs without DPO"
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


def evaluate_claims(ours: Mapping[str, Any], study: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Verdicts on claims (i)-(iv): each {id, claim, criterion, ours, study, study_text,
    checks, verdict, missing, notes}; `study` defaults to load_study()."""
    if not isinstance(ours, Mapping):
        raise TypeError(f"`ours` must be a mapping (the merged results JSON), got {type(ours).__name__}")
    study = load_study() if study is None else study
    return [claim(_Reader(ours), study) for claim in (_claim_i, _claim_ii, _claim_iii, _claim_iv)]


def geometry_block(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The `geometry` block of `ours` from helpers.geometry.pairwise_report.

    In the report's pair (a, b), `orth_frac` is b's share outside a's subspace, so it is
    stored under "b-a" and `orth_frac_rev` under "a-b".
    """
    block: dict[str, dict[str, Any]] = {
        k: {}
        for k in (
            "global_cosine", "cosine_by_layer", "median_smallest_angle", "median_largest_angle",
            "orthogonal_fraction", "orthogonal_fraction_by_layer",
        )
    }  # fmt: skip
    for e in report["pairs"]:
        pair, rev = f"{e['a']}-{e['b']}", f"{e['b']}-{e['a']}"
        block["global_cosine"][pair] = e["global_cosine"]
        block["cosine_by_layer"][pair] = e["cosine_by_layer"]
        block["median_smallest_angle"][pair] = e["angle_min_median"]
        block["median_largest_angle"][pair] = e["angle_max_median"]
        block["orthogonal_fraction"][rev] = e["orth_frac"]
        block["orthogonal_fraction"][pair] = e["orth_frac_rev"]
        block["orthogonal_fraction_by_layer"][rev] = e["orth_frac_by_layer"]
        block["orthogonal_fraction_by_layer"][pair] = e["orth_frac_rev_by_layer"]
    return block


def connectivity_block(curves: Mapping[str, Mapping[str, Any]], measure: str = "answer_ce") -> dict[str, Any]:
    """The `connectivity` block from {"a-b": helpers.connectivity.path_losses(...)}.

    The barrier is taken on the study's measure (answer cross-entropy) unless told otherwise.
    """
    from .connectivity import barrier

    return {
        "barrier": {pair: barrier(c["ts"], c[measure]) for pair, c in curves.items()},
        "measure": measure,
        "curves": {pair: dict(c) for pair, c in curves.items()},
    }


def cka_block(by_layer: Mapping[str, Any]) -> dict[str, Any]:
    """The `cka` block from {"a-b": helpers.cka.cka_by_layer(...)} (layers in order, last = output side)."""
    return {"last_layer": {p: float(v[-1]) for p, v in by_layer.items()}, "by_layer": dict(by_layer)}


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def findings_table(claims_or_ours: Any, study: Mapping[str, Any] | None = None):
    """The claims as a pandas DataFrame (claim, criterion, ours, study, verdict) for the book.

    Takes the output of evaluate_claims, or `ours` (and optionally `study`) to evaluate first.
    """
    import pandas as pd

    claims = claims_or_ours
    if isinstance(claims_or_ours, Mapping):
        claims = evaluate_claims(claims_or_ours, study)
    rows = []
    for c in claims:
        ours = "; ".join(f"{k} = {_fmt(v)}" for k, v in c["ours"].items())
        if c["missing"]:
            ours = (ours + "; " if ours else "") + "missing: " + ", ".join(c["missing"])
        rows.append(
            {
                "claim": c["claim"],
                "criterion": c["criterion"],
                "ours": ours,
                "study": "; ".join(f"{k} = {v}" for k, v in c["study_text"].items()),
                "verdict": c["verdict"],
            }
        )
    return pd.DataFrame(rows, columns=["claim", "criterion", "ours", "study", "verdict"])
