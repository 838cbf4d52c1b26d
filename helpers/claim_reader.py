"""How the claims read our numbers: pair lookups in either order, the reading of the orthogonal
fraction and the barrier kind a claim is judged on, the late layers, and what is missing.

`ours` is the merged results JSON (helpers.findings documents its keys); a number that is
absent or not finite is recorded as missing, which makes its claim "not measured".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .subspaces import READINGS

BARRIER_KINDS = ("chord", "endpoint_mean")
# The paths between SFT and its own reruns (other data order, other LoRA seed): the same loss,
# so any barrier on them is harmless, and a barrier between methods must clear theirs.
CONTROL_PATHS = ("sft-sft_order", "sft-sft_seed")
# Share of the last layers that count as "late": the study's last five of 36 blocks.
LATE_LAYER_SHARE = 5 / 36


def suffix(reading: str = "span", barrier_kind: str = "chord") -> tuple[str, str]:
    """Key suffixes of a reading of the orthogonal fraction and a barrier kind ("" for the defaults)."""
    if reading not in READINGS:
        raise ValueError(f"reading must be one of {', '.join(READINGS)}, got {reading!r}")
    if barrier_kind not in BARRIER_KINDS:
        raise ValueError(f"barrier_kind must be one of {', '.join(BARRIER_KINDS)}, got {barrier_kind!r}")
    return ("" if reading == "span" else f"_{reading}"), (
        "" if barrier_kind == "chord" else f"_{barrier_kind}"
    )


class _Reader:
    """Reads numbers out of `ours`, remembering every key it could not find."""

    def __init__(self, ours: Mapping[str, Any], reading: str = "span", barrier_kind: str = "chord"):
        self.ours = ours
        self.missing: list[str] = []
        self.reading, self.barrier_kind = reading, barrier_kind
        self.orth, self.barrier_key = suffix(reading, barrier_kind)
        self.barrier_key = f"barrier{self.barrier_key}"

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

    def control_barrier(self) -> tuple[float | None, str | None]:
        """The largest barrier between SFT and its reruns, and its path (None if none was measured)."""
        found = {
            p: self.pair("connectivity", self.barrier_key, *p.split("-"), required=False)
            for p in CONTROL_PATHS
        }
        found = {p: v for p, v in found.items() if v is not None}
        if not found:
            return None, None
        path = max(found, key=found.get)
        return found[path], path


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def late_count(layers: int) -> int:
    """How many of `layers` count as late: the study's share 5/36, at least one."""
    return max(1, round(layers * LATE_LAYER_SHARE))


def _late_mean(per_layer: list[float]) -> float:
    """Mean over the last LATE_LAYER_SHARE of the layers (at least one)."""
    n = late_count(len(per_layer))
    return sum(per_layer[-n:]) / n
