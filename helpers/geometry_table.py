"""The geometry report (helpers.geometry.pairwise_report) as aligned text and as strict JSON.

The text table is what `python -m helpers.geometry` prints, chapter 03 shows and the HTML
report embeds: one row per adapter, then one row per pair with every summary measure,
the orthogonal fraction in its three readings side by side.
"""

from __future__ import annotations

import math

# (header, report key, format) of the pair table's numeric columns. The direction reading
# is symmetric (sqrt(1 - cos^2)), so it needs one column; span and top-k are not.
COLUMNS = (
    ("cosine", "global_cosine", "{:.3f}"),
    ("ang.min", "angle_min_median", "{:.1f}"),
    ("ang.max", "angle_max_median", "{:.1f}"),
    ("span(b|a)", "orth_frac", "{:.3f}"),
    ("span(a|b)", "orth_frac_rev", "{:.3f}"),
    ("topk(b|a)", "orth_frac_top_k", "{:.3f}"),
    ("topk(a|b)", "orth_frac_rev_top_k", "{:.3f}"),
    ("direction", "orth_frac_direction", "{:.3f}"),
    ("top1 out", "top1_output_mean", "{:.3f}"),
    ("top1 in", "top1_input_mean", "{:.3f}"),
)


def report_table(report: dict) -> str:
    """The report as aligned text: one row per adapter, then one row per pair."""
    methods = [["adapter", "norm", "eff.rank(med)"]] + [
        [n, f"{m['norm']:.4g}", f"{m['effective_rank_median']:.2f}"] for n, m in report["per_method"].items()
    ]
    pairs = [["a", "b", *(header for header, _, _ in COLUMNS)]] + [
        [p["a"], p["b"], *(fmt.format(p[key]) for _, key, fmt in COLUMNS)] for p in report["pairs"]
    ]
    k, top_k = report["k"], report.get("top_k", report["k"])
    note = (
        f"angles: degrees between top-{k} left singular subspaces (k capped at both ranks), median over modules\n"
        "orthogonal fraction ||dW_b - P_a dW_b|| / ||dW_b||, global: span(b|a) projects onto a's column space,\n"
        f"topk(b|a) onto a's top-{top_k} left singular vectors, direction onto a's flattened update (sqrt(1 - cos^2))\n"
        "eff.rank: median over modules with a nonzero update; top1: mean |<u1, u1'>| over modules"
    )
    return "\n\n".join([_align(methods), *([_align(pairs)] if report["pairs"] else []), note])


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def json_safe(obj):
    """A copy with NaN and infinities replaced by None, so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def readings_frame(report: dict, ref: str, chance: dict | None = None):
    """Each update's share outside `ref`'s in the three readings (global), with the chance
    level (mean over pairs of random updates, and its sd) as the last row."""
    import pandas as pd

    rows = {}
    for entry in report["pairs"]:
        if ref not in (entry["a"], entry["b"]):
            continue
        flipped = entry["b"] == ref  # orth_frac is b's share outside a's: we want the other outside ref
        other = entry["a"] if flipped else entry["b"]
        key = "orth_frac_rev" if flipped else "orth_frac"
        rows[other] = {
            r: entry[key + ("" if r == "span" else f"_{r}")] for r in report.get("readings", ["span"])
        }
    if chance:
        rows["chance (two random updates)"] = {
            r: chance["measures"]["orth_frac" + ("" if r == "span" else f"_{r}")]["mean"]
            for r in rows[next(iter(rows))]
        }
        rows["chance sd"] = {
            r: chance["measures"]["orth_frac" + ("" if r == "span" else f"_{r}")]["sd"]
            for r in rows[next(iter(rows))]
        }
    return pd.DataFrame.from_dict(rows, orient="index")
