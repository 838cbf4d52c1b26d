"""The study's claims (i)-(iv) as code: our measured numbers in, one verdict per claim out.

`ours` is the merged JSON the book's notebooks write. Method names are lowercase
(sft, rft, dft, rift, grpo, dpo; controls sft_order, sft_seed, dpo_samelr, online_grpo
are methods too); a pair is the string "a-b" and is looked up in either order, except
where ordered. Keys read:

  geometry.global_cosine[pair]                 cosine of the flattened updates
  geometry.median_smallest_angle[pair]         deg, median over modules (optional)
  geometry.orthogonal_fraction["b-a"]          ordered: share of b's update outside a's
                                               column space, global ("span" reading);
                                               orthogonal_fraction_top_k / _direction for
                                               the other readings
  geometry.orthogonal_fraction_by_layer["b-a"] ordered: the same per layer, in layer order
                                               (and _top_k_by_layer, _direction_by_layer)
  connectivity.barrier[pair]                   rise of the loss above the straight line
                                               between the endpoints (nats/token);
                                               barrier_endpoint_mean: largest loss minus
                                               the endpoints' mean
  cka.last_layer[pair]                         CKA of last-layer hidden states
  evaluation.accuracy[method]                  fraction correct (reported only)
  evaluation.mcnemar_p[pair]                   raw exact McNemar p
                                               (helpers.evaluate.compare_methods writes this block)

Noise floors (optional, used where present): global_cosine["sft-sft_order"] (same loss and
init, another data order: what "colinear" is measured against), barrier["sft-sft_order"]
and barrier["sft-sft_seed"] (what "a barrier" must exceed), orthogonal_fraction["sft_order-sft"],
global_cosine["sft-sft_seed"] and global_cosine["dpo_samelr-sft"] (reported).
A claim whose required key is missing (or not a finite number) is "not measured".
The thresholds and the claim functions live in helpers.claims; they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .claims import (  # noqa: F401  (re-exported: the thresholds are part of this module's API)
    BARRIER_KINDS,
    BARRIER_MARGIN,
    CKA_DROP,
    CLAIMS,
    CLUSTER,
    COLINEAR_COSINE,
    COLINEAR_MARGIN,
    CONTROL_PATHS,
    CONTROLS,
    FAILS,
    HOLDS,
    LARGE_ORTHOGONAL,
    LATE_LAYER_SHARE,
    MCNEMAR_ALPHA,
    MIN_COSINE_GAP,
    NEAR_ORTHOGONAL_COSINE,
    NO_BARRIER,
    NOT_MEASURED,
    ORTHOGONAL_MARGIN,
    REWARD_WEIGHTED,
    _late_mean,
    _Reader,
    claim_i,
    claim_ii,
    claim_iii,
    claim_iv,
    late_count,
)
from .study import load_study
from .subspaces import READINGS


def evaluate_claims(
    ours: Mapping[str, Any],
    study: Mapping[str, Any] | None = None,
    reading: str = "span",
    barrier_kind: str = "chord",
) -> list[dict[str, Any]]:
    """Verdicts on claims (i)-(iv): each {id, claim, criterion, ours, study, study_text,
    checks, verdict, reading, barrier_kind, missing, notes}; `study` defaults to load_study().

    `reading` picks the orthogonal fraction claim (iii) is judged on (span, top_k,
    direction) and `barrier_kind` the barrier of claims (iii) and (iv) (chord, endpoint_mean).
    """
    if not isinstance(ours, Mapping):
        raise TypeError(f"`ours` must be a mapping (the merged results JSON), got {type(ours).__name__}")
    study = load_study() if study is None else study
    return [
        claim(_Reader(ours, reading, barrier_kind), study)
        for claim in (claim_i, claim_ii, claim_iii, claim_iv)
    ]


def definition_verdicts(
    ours: Mapping[str, Any], study: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Claims (iii) and (iv) under every definition: each reading of the orthogonal fraction
    and each barrier kind for (iii), each barrier kind for (iv). One record per combination:
    {claim, reading, barrier_kind, verdict, checks}."""
    study = load_study() if study is None else study
    rows = []
    for barrier_kind in BARRIER_KINDS:
        for reading in READINGS:
            third = evaluate_claims(ours, study, reading, barrier_kind)[2]
            rows.append({"claim": "iii", "reading": reading, "barrier_kind": barrier_kind, **_brief(third)})
        fourth = evaluate_claims(ours, study, "span", barrier_kind)[3]
        rows.append({"claim": "iv", "reading": None, "barrier_kind": barrier_kind, **_brief(fourth)})
    return rows


def _brief(claim: Mapping[str, Any]) -> dict[str, Any]:
    return {"verdict": claim["verdict"], "checks": claim["checks"], "missing": claim["missing"]}


def definition_table(definitions_by_form: Mapping[str, Sequence[Mapping[str, Any]]]):
    """Claims (iii) and (iv) under each definition (findings.definition_verdicts), one verdict
    column per form of the losses."""
    import pandas as pd

    first = next(iter(definitions_by_form.values()))
    index = [
        f"({d['claim']}) "
        + (f"{d['reading']} reading, " if d["reading"] else "")
        + f"{d['barrier_kind']} barrier"
        for d in first
    ]
    columns = {form.replace("_", " "): [d["verdict"] for d in ds] for form, ds in definitions_by_form.items()}
    return pd.DataFrame(columns, index=index)


def geometry_block(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The `geometry` block of `ours` from helpers.geometry.pairwise_report.

    In the report's pair (a, b), `orth_frac` is b's share outside a's subspace, so it is
    stored under "b-a" and `orth_frac_rev` under "a-b"; likewise for each reading.
    """
    names = ["global_cosine", "cosine_by_layer", "median_smallest_angle", "median_largest_angle"]
    suffixes = ["" if r == "span" else f"_{r}" for r in READINGS]
    names += [f"orthogonal_fraction{s}{tail}" for s in suffixes for tail in ("", "_by_layer")]
    block: dict[str, dict[str, Any]] = {k: {} for k in names}
    for e in report["pairs"]:
        pair, rev = f"{e['a']}-{e['b']}", f"{e['b']}-{e['a']}"
        block["global_cosine"][pair] = e["global_cosine"]
        block["cosine_by_layer"][pair] = e["cosine_by_layer"]
        block["median_smallest_angle"][pair] = e["angle_min_median"]
        block["median_largest_angle"][pair] = e["angle_max_median"]
        for s in suffixes:
            for tail in ("", "_by_layer"):
                block[f"orthogonal_fraction{s}{tail}"][rev] = e[f"orth_frac{s}{tail}"]
                block[f"orthogonal_fraction{s}{tail}"][pair] = e[f"orth_frac_rev{s}{tail}"]
    return block


def connectivity_block(curves: Mapping[str, Mapping[str, Any]], measure: str = "answer_ce") -> dict[str, Any]:
    """The `connectivity` block from {"a-b": helpers.connectivity.path_losses(...)}: the barrier
    of each kind (`barrier`: chord, `barrier_endpoint_mean`) on the study's measure (answer
    cross-entropy) unless told otherwise."""
    from .connectivity import barrier

    block: dict[str, Any] = {}
    for kind in BARRIER_KINDS:
        key = "barrier" if kind == "chord" else f"barrier_{kind}"
        block[key] = {pair: barrier(c["ts"], c[measure], kind=kind) for pair, c in curves.items()}
    return {**block, "measure": measure, "curves": {pair: dict(c) for pair, c in curves.items()}}


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


def verdict_text(record: Mapping[str, Any]) -> str:
    """A verdict, and for one combined over replicates in how many it held:
    "holds (holds in 3 of 3)", "inconclusive (holds in 2 of 3)"."""
    if "verdicts" not in record or record["verdict"] == NOT_MEASURED:
        return record["verdict"]
    held = sum(v == HOLDS for v in record["verdicts"])
    return f"{record['verdict']} (holds in {held} of {len(record['verdicts'])})"


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
                "verdict": verdict_text(c),
            }
        )
    return pd.DataFrame(rows, columns=["claim", "criterion", "ours", "study", "verdict"])
