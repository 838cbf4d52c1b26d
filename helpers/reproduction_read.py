"""Reading one run's results for the reproduction patterns (helpers.reproduction).

Chapter-keyed lookups that give None for anything missing or not a finite number, so a pattern
whose inputs are absent says "not measured" instead of failing; and the record every pattern
returns, with the verdict words. The keys read are listed in helpers.reproduction's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .claims import MCNEMAR_ALPHA
from .lmc_measures import barrier
from .study import format_entry

SAME, REVERSED, NOT_AT_SCALE = "same", "reversed", "not at this scale"
MIXED, NOT_MEASURED = "mixed", "not measured"


def _chapters(results: Mapping[str, Any]) -> Mapping[str, Any]:
    """Chapter-keyed results; chapter 07's merged `ours` dict is mapped onto its chapters."""
    if not isinstance(results, Mapping):
        raise TypeError(
            f"results must be a mapping (load_results or chapter 07's `ours`), got {type(results)}"
        )
    if any(k[:2].isdigit() for k in results):
        return results
    return {
        "03_delta_geometry": {"geometry": results.get("geometry") or {}},
        "04_mode_connectivity": {"paths": (results.get("connectivity") or {}).get("curves") or {}},
        "05_cka": {"cka": results.get("cka") or {}},
        "06_evaluation": {"evaluation": results.get("evaluation") or {}},
    }


def _get(r: Mapping[str, Any], *path: str) -> Any:
    node: Any = r
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _num(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _pair(table: Mapping[str, Any] | None, a: str, b: str, ordered: bool = False) -> Any:
    table = table or {}
    if f"{a}-{b}" in table:
        return table[f"{a}-{b}"]
    return None if ordered else table.get(f"{b}-{a}")


def _cos(r, a: str, b: str) -> float | None:
    return _num(_pair(_get(r, "03_delta_geometry", "geometry", "global_cosine"), a, b))


def _record(key, pattern, study_keys, study, ours, verdict, criterion) -> dict[str, Any]:
    """One pattern's record; a missing number makes the verdict "not measured"."""
    measured = all(v is not None for v in ours.values())
    return {
        "key": key,
        "pattern": pattern,
        "study": "; ".join(
            f"{k.split('.', 1)[1]} {format_entry(study[k])}" for k in study_keys if k in study
        ),
        "ours": ours,
        "verdict": verdict() if measured else NOT_MEASURED,
        "criterion": criterion,
    }


def _signed(stat: float, margin: float) -> str:
    """The study's direction beyond the margin, the opposite one beyond it, or neither."""
    return SAME if stat > margin else REVERSED if stat < -margin else NOT_AT_SCALE


def _top1(r, a: str, b: str) -> float | None:
    for e in _get(r, "03_delta_geometry", "pairs") or []:
        if {e.get("a"), e.get("b")} == {a, b}:
            return _num(e.get("top1_output_mean"))
    return None


def _orth(r, b: str, a: str, by_layer: bool = False) -> Any:
    table = "orthogonal_fraction_by_layer" if by_layer else "orthogonal_fraction"
    value = _pair(_get(r, "03_delta_geometry", "geometry", table), b, a, ordered=True)
    if by_layer:
        ok = isinstance(value, list) and value and all(_num(v) is not None for v in value)
        return [float(v) for v in value] if ok else None
    return _num(value)


def _path_barrier(r, a: str, b: str, measure: str, kind: str) -> float | None:
    paths = _get(r, "04_mode_connectivity", "paths") or _get(
        r, "04_mode_connectivity", "connectivity", "curves"
    )
    curve = _pair(paths, a, b, ordered=True) or _pair(paths, b, a, ordered=True)
    if not isinstance(curve, Mapping) or measure not in curve:
        return None
    values = [_num(v) for v in curve[measure]]
    if None in values:
        return None
    return barrier(curve["ts"], values, kind=kind)


def _beats(r, a: str, b: str) -> int | None:
    """+1 when a is more accurate than b by exact McNemar at MCNEMAR_ALPHA, -1 when b is, 0 else."""
    acc = _get(r, "06_evaluation", "evaluation", "accuracy") or {}
    p = _num(_pair(_get(r, "06_evaluation", "evaluation", "mcnemar_p"), a, b))
    xa, xb = _num(acc.get(a)), _num(acc.get(b))
    if p is None or xa is None or xb is None:
        return None
    return 0 if p >= MCNEMAR_ALPHA or xa == xb else (1 if xa > xb else -1)


def _all_beat(r, a: str, others: Sequence[str]) -> dict[str, Any]:
    signs = [_beats(r, a, m) for m in others]
    acc = _get(r, "06_evaluation", "evaluation", "accuracy") or {}
    ours = {f"accuracy {m}": _num(acc.get(m)) for m in (a, *others)}
    ours[f"{a} beats / loses to / ties (McNemar p < {MCNEMAR_ALPHA})"] = (
        None if None in signs else f"{signs.count(1)} / {signs.count(-1)} / {signs.count(0)}"
    )
    return {"ours": ours, "signs": signs}


def _all_signs(signs: Sequence[int]) -> str:
    return SAME if all(s == 1 for s in signs) else REVERSED if all(s == -1 for s in signs) else NOT_AT_SCALE
