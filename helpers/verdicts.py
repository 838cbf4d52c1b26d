"""Verdicts that survive replicates: each claim judged within every replicate, then combined.

A replicate is a complete copy of the study's design with its own LoRA initialisation and
data order (helpers.replicates). A claim *holds* when its criterion holds in every
replicate, *does not hold* when it fails in every replicate, and is *inconclusive*
otherwise; it is *not measured* when any replicate could not measure it. The same rule
applies to each criterion (check) of a claim, whose margin to its threshold is kept per
replicate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .claims import BARRIER_KINDS, FAILS, HOLDS, NOT_MEASURED
from .findings import evaluate_claims, verdict_text
from .spread import _finite, spread_text, summarise, unanimous
from .study import load_study
from .subspaces import READINGS

INCONCLUSIVE = "inconclusive"


def combine(verdicts: Sequence[str]) -> str:
    """One verdict from one per replicate: holds / does not hold only when every replicate says so."""
    if not verdicts or NOT_MEASURED in verdicts:
        return NOT_MEASURED
    return unanimous(verdicts, HOLDS, FAILS, INCONCLUSIVE)


def ours_from_results(results: Mapping[str, Any]) -> dict[str, Any]:
    """The `ours` dict the claims read (helpers.findings documents its keys) from the chapters'
    results of one replicate (helpers.replicates.replicate_results)."""
    blocks = {
        "geometry": "03_delta_geometry",
        "connectivity": "04_mode_connectivity",
        "cka": "05_cka",
        "evaluation": "06_evaluation",
    }
    return {key: (results.get(chapter) or {}).get(key, {}) for key, chapter in blocks.items()}


def _combined_check(name: str, per_replicate: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """One criterion over replicates: its outcome, value, threshold and margin in each (None where a
    replicate did not run it) and the combined verdict."""
    first = next(c for c in per_replicate if c is not None)
    ok = [None if c is None else c["ok"] for c in per_replicate]
    verdicts = [NOT_MEASURED if v is None else (HOLDS if v else FAILS) for v in ok]
    return {
        "name": name,
        "test": first["test"],
        "ok": ok,
        "values": [None if c is None else c["value"] for c in per_replicate],
        "thresholds": [None if c is None else c.get("threshold") for c in per_replicate],
        "margins": [None if c is None else c.get("margin") for c in per_replicate],
        "verdict": combine(verdicts),
    }


def combine_claims(per_replicate: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One claim's records (evaluate_claims, one per replicate) as one record: the combined verdict,
    every replicate's verdict, each check over replicates, and our numbers as mean (min to max)."""
    first = per_replicate[0]
    verdicts = [c["verdict"] for c in per_replicate]
    names = list(dict.fromkeys(x["name"] for c in per_replicate for x in c["checks"]))
    checks = [
        _combined_check(
            name, [next((x for x in c["checks"] if x["name"] == name), None) for c in per_replicate]
        )
        for name in names
    ]
    keys = list(dict.fromkeys(k for c in per_replicate for k in c["ours"]))
    ours = {}
    for key in keys:
        values = [c["ours"].get(key) for c in per_replicate]
        numeric = all(v is None or _finite(v) is not None for v in values)
        ours[key] = spread_text(summarise(values)) if numeric else values[0]
    missing = list(dict.fromkeys(m for c in per_replicate for m in c["missing"]))
    return {
        **{
            k: first[k]
            for k in ("id", "claim", "criterion", "study", "study_text", "reading", "barrier_kind")
        },
        "verdict": combine(verdicts),
        "verdicts": verdicts,
        "checks": checks,
        "ours": ours,
        "missing": missing,
        "notes": list(dict.fromkeys(n for c in per_replicate for n in c["notes"])),
        "replicates": len(per_replicate),
    }


def evaluate_over_replicates(
    ours: Sequence[Mapping[str, Any]],
    study: Mapping[str, Any] | None = None,
    reading: str = "span",
    barrier_kind: str = "chord",
) -> list[dict[str, Any]]:
    """Claims (i)-(iv) judged within each replicate's `ours` and combined (combine_claims)."""
    if not ours:
        raise ValueError("evaluate_over_replicates needs the results of at least one replicate")
    study = load_study() if study is None else study
    per_replicate = [evaluate_claims(o, study, reading, barrier_kind) for o in ours]
    return [combine_claims([claims[i] for claims in per_replicate]) for i in range(len(per_replicate[0]))]


def definitions_over_replicates(
    ours: Sequence[Mapping[str, Any]], study: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Claims (iii) and (iv) under every definition (each reading of the orthogonal fraction and
    barrier kind for (iii), each barrier kind for (iv)), each combined over replicates:
    {claim, reading, barrier_kind, verdict, verdicts, checks, missing}."""
    study = load_study() if study is None else study
    rows = []
    for barrier_kind in BARRIER_KINDS:
        for claim, readings in (("iii", READINGS), ("iv", (None,))):
            for reading in readings:
                index = 2 if claim == "iii" else 3
                c = evaluate_over_replicates(ours, study, reading or "span", barrier_kind)[index]
                keep = {k: c[k] for k in ("verdict", "verdicts", "checks", "missing")}
                rows.append({"claim": claim, "reading": reading, "barrier_kind": barrier_kind, **keep})
    return rows


def margin_table(claims: Sequence[Mapping[str, Any]]):
    """Each criterion of each claim: the margin to its threshold in every replicate (positive on the
    passing side; "" where it has no threshold or did not run), and its verdict over replicates."""
    import pandas as pd

    rows = []
    for c in claims:
        for x in c["checks"]:
            row = {"claim": f"({c['id']})", "criterion": x["name"]}
            for j, (margin, ok) in enumerate(zip(x["margins"], x["ok"], strict=True)):
                row[f"replicate {j}"] = (
                    "" if margin is None else f"{margin:+.3g}" + ("" if ok else " (fails)")
                )
            row["verdict"] = x["verdict"]
            rows.append(row)
    return pd.DataFrame(rows).set_index(["claim", "criterion"]) if rows else pd.DataFrame()


def verdict_table(claims_by_form: Mapping[str, Sequence[Mapping[str, Any]]]):
    """One row per claim, one column per form of the losses: the verdict over replicates and in
    how many of them the claim held."""
    import pandas as pd

    first = next(iter(claims_by_form.values()))
    columns = {"claim": [c["claim"] for c in first]}
    columns |= {form.replace("_", " "): [verdict_text(c) for c in cs] for form, cs in claims_by_form.items()}
    return pd.DataFrame(columns, index=[f"({c['id']})" for c in first])


def definition_table(definitions_by_form: Mapping[str, Sequence[Mapping[str, Any]]]):
    """definitions_over_replicates as a table: one row per definition, one column per form."""
    import pandas as pd

    first = next(iter(definitions_by_form.values()))
    index = [
        f"({d['claim']}) "
        + (f"{d['reading']} reading, " if d["reading"] else "")
        + f"{d['barrier_kind']} barrier"
        for d in first
    ]
    columns = {
        form.replace("_", " "): [verdict_text(d) for d in ds] for form, ds in definitions_by_form.items()
    }
    return pd.DataFrame(columns, index=index)
