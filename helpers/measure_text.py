"""Chapter 04's statement of which connectivity loss the claims read, and why, from this run's numbers.

`helpers.connectivity.measure_summary` gives, per measure, the base's value, the adapters'
range, log V, whether the measure is off-distribution or saturated, and its largest chord
barrier. The sentences here are written from those numbers (one dict per replicate), so the
chapter's prose cannot disagree with the run it shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .connectivity import MEASURE_LABELS, SATURATED_NATS, STUDY_MEASURE
from .spread import spread_text, summarise

Summary = Mapping[str, Mapping[str, Any]]


def _span(values: Sequence[float], fmt: str = "{:.3g}") -> str:
    """`x` when every replicate agrees to the format, else `mean (min to max)`."""
    return spread_text(summarise(values), fmt)


def measure_choice_markdown(summaries: Sequence[Summary], claim: str) -> str:
    """Markdown: the study's measure, the answer after the solution and the solution NLL on this run,
    which measure the claims read (`claim`, with the chord barrier) and why the solution NLL shows
    no barrier when it shows none. `summaries`: one `measure_summary` per replicate."""
    if not summaries:
        raise ValueError("measure_choice_markdown: no replicate summaries given")
    missing = [m for m in (STUDY_MEASURE, claim) if any(m not in s for s in summaries)]
    if missing:
        raise ValueError(f"measure_choice_markdown: the summaries lack {', '.join(missing)}")

    def vals(measure: str, key: str) -> list[float]:
        return [float(s[measure][key]) for s in summaries]

    def every(measure: str, key: str) -> bool:
        return all(bool(s[measure][key]) for s in summaries)

    study = summaries[0][STUDY_MEASURE]
    out = [
        f"The study's measure, the {MEASURE_LABELS[STUDY_MEASURE]}, is {_span(vals(STUDY_MEASURE, 'base'))} on "
        f"the base and {_span(vals(STUDY_MEASURE, 'adapters_min'))} to "
        f"{_span(vals(STUDY_MEASURE, 'adapters_max'))} on the adapters, against "
        f"{study['log_vocab']:.2f} for a uniform guess over the vocabulary (log V)."
    ]
    if every(STUDY_MEASURE, "off_distribution"):
        out.append(
            "It is worse than uniform on the base: this model writes its answer only after a worked "
            "solution, never right after the prompt, so the measure asks about text the model never "
            "produces."
        )
    after = "answer_ce_after_solution"
    if all(after in s for s in summaries):
        sat = every(after, "saturated")
        out.append(
            f"The answer CE after the gold solution runs from {_span(vals(after, 'adapters_min'))} to "
            f"{_span(vals(after, 'adapters_max'))} on the adapters"
            + (
                f", below {SATURATED_NATS} nats/token at every endpoint: the answer is the number the "
                "solution's last line computed, every model copies it, and a barrier cannot rise from a "
                "floor it already sits on."
                if sat
                else "."
            )
        )
    label = MEASURE_LABELS.get(claim, claim)
    out.append(
        f"The claims on this profile read the **{label}**, with the chord barrier (the rise above the "
        "straight line between the endpoint losses): it scores every token of the worked solution, the "
        "text a model that reasons first actually writes. It is "
        f"{_span(vals(claim, 'base'))} on the base, {_span(vals(claim, 'adapters_min'))} to "
        f"{_span(vals(claim, 'adapters_max'))} on the adapters."
    )
    rises = vals(claim, "largest_chord_barrier")
    if max(rises) <= 0:
        out.append(
            f"It shows no barrier on any path (largest rise above the chord {_span(rises, '{:+.4f}')} "
            "nats/token): the base was pretrained by NLL on worked solutions, so it sits near a minimum "
            "of this loss and each LoRA update is a small move inside that basin, where the loss is "
            "convex along a line and a convex curve never rises above its chord. The endpoint-mean "
            "barrier of the same curve is then about half the endpoints' gap, not a barrier."
        )
    else:
        out.append(
            f"Its largest rise above the chord over the paths is {_span(rises, '{:+.4f}')} nats/token."
        )
    return " ".join(out)
