"""Which held-out measure a mode-connectivity barrier is read on, and the barrier itself.

The measures (MEASURES) are computed along paths by helpers.connectivity, which re-exports
everything here; this module needs neither torch nor a model, so the claims and the book's
prose can read barriers from saved curves cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class ConnectivityError(ValueError):
    """Deltas that do not fit the model, or inputs that cannot be scored."""


MEASURES = ("answer_ce", "answer_ce_after_solution", "solution_nll")
MEASURE_LABELS = {
    "answer_ce": "answer CE right after the prompt (nats/token)",
    "answer_ce_after_solution": "answer CE after the gold solution (nats/token)",
    "solution_nll": "solution NLL (nats/token)",
}
STUDY_MEASURE = "answer_ce"
# The measure the claims' barriers are read on for the tiny models (chapter 07 passes it to
# findings.connectivity_block; `claim_measure` picks per profile). Measured on `tiny` (seed 42,
# 64 held-out problems, 11 points per path, 11 paths):
# - answer_ce, the study's, is off-distribution: 11.0 nats/token on the base and 8.85-11.3 on
#   the adapters, worse than uniform over 512 tokens (6.24). A tiny model never writes `#### N`
#   right after "Answer:". Its "barriers" (0.30-0.31 on every path from SFT/RFT/RIFT to DFT,
#   GRPO or DPO) are the shape of SFT's own ray near the base (11.03 -> 11.08 -> ... 9.27),
#   retraced by any path to an update that barely moves this measure: not a separation.
# - answer_ce_after_solution is saturated: 0.0006-0.006 on every model and point, because the
#   answer is the number the solution's last line computed and every tiny model copies it. A
#   barrier test on it cannot find anything, so it cannot carry a claim here; on models whose
#   answer does not follow from the last line it is the study's question asked in the right place.
# - solution_nll is on-distribution and separates the methods (0.013 for DFT to 0.16 for SFT):
#   the claims use it, with the chord barrier (see `no_barrier_reason` for why it shows none).
CLAIM_MEASURE = "solution_nll"
# Below this many nats/token on every endpoint a measure is saturated (nothing to rise from).
SATURATED_NATS = 0.01


def claim_measure(profile: Any) -> str:
    """The measure the claims use on a profile: the study's own (answer CE right after the prompt)
    on the study's chat models, CLAIM_MEASURE on the tiny models, where the study's measure is
    off-distribution and the answer after the solution saturated (see the notes on CLAIM_MEASURE)."""
    return CLAIM_MEASURE if profile.model.student == "tiny" else STUDY_MEASURE


def no_barrier_reason() -> str:
    """Why the solution NLL shows no barrier on any path at tiny scale (measured on `tiny`)."""
    return (
        "The student was pretrained by NLL on worked solutions from the same generator, so the base "
        "sits close to a minimum of the solution NLL (0.022 nats/token; the best adapter, DFT, reaches "
        "0.013) and every LoRA update is a small move inside that one basin. Near a minimum the loss is "
        "convex along any straight line, and a convex curve never rises above its chord; the mix of two "
        "updates that are not colinear is also shorter than either (|(a + b)/2| < (|a| + |b|)/2), so it "
        "lies nearer the base, where the loss is lower. On `tiny` every interior point of all 11 paths "
        "lies below the chord (largest rise -0.0002 nats/token, SFT-RFT), and even SFT's reruns meet "
        "lower in the middle (SFT-SFT seed: 0.147 against 0.156 and 0.158 at the ends). The "
        "endpoint-mean barrier of this measure is then half the endpoints' gap (0.07 on SFT-GRPO, "
        "(0.156 - 0.016) / 2), not a barrier: the claims read the chord barrier on it."
    )


def measure_summary(lmc: Mapping[str, Any], vocab_size: int) -> dict[str, dict[str, float | bool]]:
    """Per measure of a connectivity report (compare.connectivity_report): the base's value (t = 0
    of the rays), the range over the adapters (t = 1), log V, whether the base is worse than
    uniform (off-distribution), whether every endpoint is below SATURATED_NATS (saturated), and
    the largest chord barrier over the paths. Chapter 04 can state its choice of measure from it."""
    rays, paths = lmc["rays"], lmc["paths"]
    if not rays or not paths:
        raise ConnectivityError("measure_summary: the report needs rays (for the base) and paths")
    out: dict[str, dict[str, float | bool]] = {}
    for measure in [m for m in MEASURES if all(m in c for c in (*rays.values(), *paths.values()))]:
        base = float(next(iter(rays.values()))[measure][0])
        adapters = [float(c[measure][-1]) for c in rays.values()]
        ends = adapters + [float(c[measure][i]) for c in paths.values() for i in (0, -1)]
        out[measure] = {
            "base": base,
            "adapters_min": min(adapters),
            "adapters_max": max(adapters),
            "log_vocab": math.log(vocab_size),
            "off_distribution": base > math.log(vocab_size),
            "saturated": max(ends) < SATURATED_NATS,
            "largest_chord_barrier": max(barrier(c["ts"], c[measure]) for c in paths.values()),
        }
    return out


BARRIER_KINDS = ("chord", "endpoint_mean")


def barrier(ts: Sequence[float], losses: Sequence[float], kind: str = "chord") -> float:
    """Loss barrier of a curve sampled at `ts` (sorted by t here, so any order is fine).

    kind="chord" (Entezari et al. 2022): the largest rise above the straight line between
    the endpoint losses, 0 if the curve never rises above it. kind="endpoint_mean"
    (Frankle et al. 2020): the largest loss on the path minus the mean of the endpoint
    losses. The endpoints are the smallest and largest t; every t must be distinct.
    """
    if kind not in BARRIER_KINDS:
        raise ConnectivityError(f"barrier: kind must be one of {', '.join(BARRIER_KINDS)}, got {kind!r}")
    t, y = np.asarray(ts, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if t.shape != y.shape or t.ndim != 1 or t.size < 2:
        raise ConnectivityError(
            f"barrier: need matching 1-d ts and losses of length >= 2, got {t.shape} and {y.shape}"
        )
    if not np.all(np.isfinite(t)):
        raise ConnectivityError(f"barrier: ts must be finite, got {t.tolist()}")
    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    if np.any(np.diff(t) == 0):
        raise ConnectivityError(f"barrier: ts must be distinct, got {sorted(t.tolist())}")
    if kind == "endpoint_mean":
        return float(np.max(y) - (y[0] + y[-1]) / 2)
    line = y[0] + (t - t[0]) / (t[-1] - t[0]) * (y[-1] - y[0])
    return float(max(np.max(y - line), 0.0))
