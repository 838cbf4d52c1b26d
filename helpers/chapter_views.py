"""What the analysis chapters show over replicates: one table per replicate (for
helpers.spread.spread_frame) and lookups of pairs in a block summarised over replicates.

Each chapter computes its numbers within every replicate (a replicate's runs share one LoRA
init and data order), then shows the mean with the spread; these functions hold the
table-building that would otherwise sit in the notebooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .geometry_table import COLUMNS
from .spread import summarise

Summary = Mapping[str, Any]


def to_reference(
    table: Mapping[str, Summary], ref: str, names: Sequence[str], outside: bool = False
) -> dict[str, Summary]:
    """{name: the summary of pair (ref, name)} for every name but ref. A symmetric table is read
    in either order; with `outside` the ordered key "name-ref" (name's share outside ref's)."""
    out = {}
    for name in names:
        if name == ref:
            continue
        keys = [f"{name}-{ref}"] if outside else [f"{ref}-{name}", f"{name}-{ref}"]
        found = next((table[k] for k in keys if k in table), None)
        if found is not None:
            out[name] = found
    return out


def slim_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """A pairwise_report's per-method and pair summaries without the per-module lists (for the JSON)."""
    per_method = {
        n: {k: v for k, v in m.items() if not k.endswith("_by_module")}
        for n, m in report["per_method"].items()
    }
    pairs = [{k: v for k, v in e.items() if not k.endswith("_by_module")} for e in report["pairs"]]
    return {"per_method": per_method, "pairs": pairs}


def pair_frame(report: Mapping[str, Any], ref: str | None = None):
    """The report's pair table (helpers.geometry_table.COLUMNS) as a DataFrame indexed by "a-b";
    with `ref`, only the pairs with it."""
    import pandas as pd

    rows = {
        f"{e['a']}-{e['b']}": {header: e[key] for header, key, _ in COLUMNS}
        for e in report["pairs"]
        if ref is None or ref in (e["a"], e["b"])
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def method_frame(report: Mapping[str, Any]):
    """Each update's norm and median effective rank (over modules with a nonzero update)."""
    import pandas as pd

    return pd.DataFrame(
        {
            n: {"norm": m["norm"], "effective rank (median)": m["effective_rank_median"]}
            for n, m in report["per_method"].items()
        }
    ).T


def cka_frame(cka: Mapping[str, Any]):
    """Per pair: linear and debiased CKA of the last layer, and debiased CKA averaged over layers."""
    import pandas as pd

    return pd.DataFrame(
        {
            "linear, last layer": {p: v[-1] for p, v in cka["linear"].items()},
            "debiased, last layer": {p: v[-1] for p, v in cka["debiased"].items()},
            "debiased, mean over layers": {p: sum(v) / len(v) for p, v in cka["debiased"].items()},
        }
    )


def evaluation_frame(evaluation: Mapping[str, Any]):
    """Per model: accuracy, its 95% interval's ends, correct and n (a compare_methods block)."""
    import pandas as pd

    return pd.DataFrame(
        {
            m: {
                "accuracy": evaluation["accuracy"][m],
                "95% low": evaluation["ci"][m][0],
                "95% high": evaluation["ci"][m][1],
                "correct": s["correct"],
                "n": s["n"],
            }
            for m, s in evaluation["summary"].items()
        }
    ).T


def mcnemar_frame(evaluations: Sequence[Mapping[str, Any]], ref: str | None = None, alpha: float = 0.05):
    """Per pair (with `ref`, those with it): the Holm-adjusted exact McNemar p over replicates (mean,
    smallest, largest) and in how many replicates the two models differ (p < alpha)."""
    import pandas as pd

    pairs = list(dict.fromkeys(p for e in evaluations for p in e["mcnemar_p_holm"]))
    if ref is not None:
        pairs = [p for p in pairs if ref in _split(p, evaluations[0]["accuracy"])]
    rows = {}
    for pair in pairs:
        s = summarise([e["mcnemar_p_holm"].get(pair) for e in evaluations])
        differs = sum(v is not None and v < alpha for v in s["values"])
        rows[pair] = {"p (Holm), mean": s["mean"], "smallest": s["min"], "largest": s["max"]}
        rows[pair]["differ in"] = f"{differs} of {s['n']}"
    return pd.DataFrame.from_dict(rows, orient="index")


def largest_p(evaluations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """An evaluation block (for plots_analysis.mcnemar_heatmap) whose Holm p of each pair is the
    largest over replicates: a pair below 0.05 there differs in every replicate."""
    first = evaluations[0]
    worst = {
        pair: max(e["mcnemar_p_holm"][pair] for e in evaluations if pair in e["mcnemar_p_holm"])
        for pair in first["mcnemar_p_holm"]
    }
    return {"accuracy": first["accuracy"], "mcnemar_p_holm": worst, "mcnemar_p": worst}


def mean_evaluation(accuracy: Mapping[str, Summary]) -> dict[str, Any]:
    """An evaluation block whose accuracy is the mean over replicates and whose interval is the
    replicates' range (for plots_analysis.accuracy_against)."""
    kept = {m: s for m, s in accuracy.items() if s["n"]}
    return {
        "accuracy": {m: s["mean"] for m, s in kept.items()},
        "ci": {m: [s["min"], s["max"]] for m, s in kept.items()},
    }


def _split(pair: str, names: Sequence[str]) -> tuple[str, str] | tuple[()]:
    """ "a-b" as (a, b) for two of `names` (run names hold no "-"), () if it is not such a pair."""
    a, _, b = pair.partition("-")
    return (a, b) if a in names and b in names else ()
