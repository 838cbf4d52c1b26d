"""Numbers over replicates: the mean with the spread (min and max) and every replicate's value.

A replicate is one complete copy of the study's design (helpers.replicates). Every chapter
computes its numbers within each replicate and reports them over replicates through these
functions: `summarise` for one number, `summarise_tree` for a whole JSON block (dicts of
numbers and of per-layer lists, keyed alike in every replicate), `spread_frame` for tables.
A value missing or not finite in a replicate is None there and left out of mean/min/max;
`n` counts the replicates that measured it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

SUMMARY_KEYS = frozenset({"mean", "min", "max", "n", "values"})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: Any) -> float | None:
    return float(value) if _number(value) and math.isfinite(value) else None


def summarise(values: Sequence[Any]) -> dict[str, Any]:
    """{mean, min, max, n, values} of one number over replicates (None where a replicate has none)."""
    clean = [_finite(v) for v in values]
    kept = [v for v in clean if v is not None]
    if not kept:
        return {"mean": None, "min": None, "max": None, "n": 0, "values": clean}
    return {
        "mean": statistics.fmean(kept),
        "min": min(kept),
        "max": max(kept),
        "n": len(kept),
        "values": clean,
    }


def unanimous(labels: Sequence[str], yes: str, no: str, mixed: str = "inconclusive") -> str:
    """`yes` when every replicate's label is `yes`, `no` when every one is `no`, else `mixed`:
    a verdict over replicates stands only where the replicates agree."""
    if all(label == yes for label in labels):
        return yes
    if all(label == no for label in labels):
        return no
    return mixed


def is_summary(node: Any) -> bool:
    """Whether `node` is a leaf written by `summarise` / `summarise_tree`."""
    return isinstance(node, Mapping) and set(node) == SUMMARY_KEYS


def _numeric_list(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(
        isinstance(v, list) and all(x is None or _number(x) for x in v) for v in present
    )


def summarise_tree(trees: Sequence[Any], where: str = "") -> Any:
    """One block per replicate in, one block out with the same keys: each number becomes its
    `summarise`, each list of numbers (per layer, per step) a summary whose mean/min/max/n are
    lists; other values stay as they are when every replicate agrees, else become the list of
    every replicate's. A key absent from a replicate counts as None there."""
    present = [t for t in trees if t is not None]
    if not present:
        return None
    if all(isinstance(t, Mapping) for t in present):
        keys = list(dict.fromkeys(k for t in present for k in t))
        return {
            k: summarise_tree([t.get(k) if isinstance(t, Mapping) else None for t in trees], f"{where}.{k}")
            for k in keys
        }
    if all(_number(t) for t in present):
        return summarise(trees)
    if _numeric_list(trees):
        lengths = {len(t) for t in present}
        if len(lengths) != 1:
            raise ValueError(f"summarise_tree: {where or 'the block'} has lists of lengths {sorted(lengths)}")
        width = lengths.pop()
        columns = [summarise([t[i] if t is not None else None for t in trees]) for i in range(width)]
        out = {key: [c[key] for c in columns] for key in ("mean", "min", "max", "n")}
        return {**out, "values": [None if t is None else [_finite(x) for x in t] for t in trees]}
    return present[0] if all(t == present[0] for t in trees) else list(trees)


def means(tree: Any) -> Any:
    """A summarised block with each summary replaced by its mean (the shape one replicate has)."""
    if is_summary(tree):
        return tree["mean"]
    if isinstance(tree, Mapping):
        return {k: means(v) for k, v in tree.items()}
    return tree


def spread_text(summary: Mapping[str, Any], fmt: str = "{:.3g}") -> str:
    """ "mean (min to max)" of a summary; one number when every replicate agrees; [k of n] when
    only k of the n replicates measured it; "" when none did."""
    if not summary["n"]:
        return ""
    mean, low, high = (fmt.format(summary[k]) for k in ("mean", "min", "max"))
    text = mean if low == high else f"{mean} ({low} to {high})"
    total = len(summary["values"])
    return text if summary["n"] == total else f"{text} [{summary['n']} of {total}]"


def spread_frame(frames: Sequence[Any], fmt: str = "{:.3g}", listed: Sequence[str] = ()):
    """Tables of the same layout, one per replicate, as one table of "mean (min to max)" cells.

    Rows and columns are those of any replicate (in first-seen order); a numeric cell is
    summarised over the replicates that have it, any other cell (and every cell of the
    `listed` columns, e.g. seeds) is shown once when every replicate agrees and as
    "a / b / ..." otherwise.
    """
    import pandas as pd

    if not frames:
        raise ValueError("spread_frame needs at least one table")
    index = list(dict.fromkeys(i for f in frames for i in f.index))
    columns = list(dict.fromkeys(c for f in frames for c in f.columns))
    cells = {}
    for column in columns:
        cells[column] = {}
        for row in index:
            values = [f.at[row, column] if row in f.index and column in f.columns else None for f in frames]
            values = [None if _missing(v) else v for v in values]
            cells[column][row] = _cell(values, fmt, column in listed)
    names = frames[0].index.names
    rows = pd.MultiIndex.from_tuples(index, names=names) if len(names) > 1 else pd.Index(index, name=names[0])
    return pd.DataFrame(cells, index=rows, columns=columns)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(values: list[Any], fmt: str, listed: bool = False) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return ""
    if not listed and all(_number(v) or hasattr(v, "dtype") for v in present):
        return spread_text(summarise([None if v is None else float(v) for v in values]), fmt)
    texts = list(dict.fromkeys(str(int(v)) if _number(v) and v == int(v) else str(v) for v in present))
    return texts[0] if len(texts) == 1 else " / ".join(texts)
