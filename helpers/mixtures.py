"""Dose-response data: SFT training sets from the same rollouts with the wrong rollouts' share of the loss set.

SFT differs from RFT only by the loss it puts on wrong rollouts. The SFT loss is a token
mean (helpers.losses.sft), so every completion token carries the same weight, and the
wrong rollouts' share of the loss is their share of the completion tokens:

    share = wrong tokens / (wrong tokens + correct tokens),

counted as the loss counts them (`completion_tokens`: after truncation, EOS included). A
share of rows would misstate it whenever wrong rollouts are longer or shorter than right
ones (they usually are). Every correct rollout is kept exactly once, so share 0 is RFT's
data and the natural share is SFT's, row for row; the wrong rollouts are taken in a seeded
order, all of them once before any repeats, until the share is as close to the requested
one as a single row allows. The number of rows therefore follows the share.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from helpers.method_data import load_rollouts
from helpers.prompting import tokenize_pair


class MixtureError(ValueError):
    """A share that these rollouts cannot give (or inputs that do not fit together)."""


@dataclass(frozen=True)
class Mixture:
    """An SFT training set (rollout records) and what it holds."""

    records: list[dict]
    requested: float
    share: float  # realised wrong-token share
    correct_rows: int
    wrong_rows: int
    correct_tokens: int
    wrong_tokens: int
    max_repeats: int  # the most times one wrong rollout occurs

    def summary(self) -> dict[str, Any]:
        """Everything but the records, for save_results."""
        return {k: v for k, v in self.__dict__.items() if k != "records"}


def completion_tokens(records: Sequence[dict], tokenizer: Any, max_length: int) -> list[int]:
    """Completion tokens of each rollout as the SFT loss sees them (tokenize_pair: truncated, with EOS)."""
    return [
        sum(tokenize_pair(tokenizer, r["prompt"], r["completion"], max_length)["completion_mask"])
        for r in records
    ]


def _split(records: list[dict], lengths: Sequence[int]) -> tuple[list[int], list[int]]:
    """Indices of correct (reward > 0) and wrong rollouts, after checking lengths fit the records."""
    if len(lengths) != len(records):
        raise MixtureError(f"lengths has {len(lengths)} entries for {len(records)} rollouts")
    if any(n < 1 for n in lengths):
        raise MixtureError("every rollout needs at least one completion token (lengths must be >= 1)")
    correct = [i for i, r in enumerate(records) if r["reward"] > 0]
    return correct, [i for i, r in enumerate(records) if r["reward"] <= 0]


def natural_share(rollouts: Sequence[dict], lengths: Sequence[int]) -> float:
    """The wrong rollouts' share of the completion tokens of all rollouts (SFT's own share)."""
    records = load_rollouts(rollouts)
    _, wrong = _split(records, lengths)
    return sum(lengths[i] for i in wrong) / sum(lengths)


def build_mixture(
    rollouts: Sequence[dict],
    share: float | str,
    lengths: Sequence[int],
    seed: int,
    max_repeats: int | None = None,
) -> Mixture:
    """Every correct rollout once plus wrong ones (seeded, cycled) so wrong tokens make up `share` of the total.

    `share` is a number in [0, 1) or "natural". `lengths` are the completion tokens of each
    rollout (`completion_tokens`; all 1 gives a share of rows). The realised share is the
    closest one row away from the request; `max_repeats` caps how often one wrong rollout
    may occur. Records come back in their original order (repeats side by side).
    """
    records = load_rollouts(rollouts)
    correct, wrong = _split(records, lengths)
    if share == "natural":
        share = natural_share(records, lengths)
    if isinstance(share, str) or not math.isfinite(share) or not 0 <= share < 1:
        raise MixtureError(f"share must be a number in [0, 1) or 'natural'; got {share!r}")
    if not correct:
        raise MixtureError("no correct rollout (reward > 0): every mixture keeps the correct rollouts")
    if share > 0 and not wrong:
        raise MixtureError(f"share {share:g} needs wrong rollouts; these rollouts have none")
    correct_tokens = sum(lengths[i] for i in correct)
    order = list(wrong)
    random.Random(seed).shuffle(order)

    def realised(tokens: int) -> float:
        return tokens / (tokens + correct_tokens)

    picked, tokens = [], 0
    while order and realised(tokens) < share:
        nxt = order[len(picked) % len(order)]  # cycling: no repeat before every wrong rollout is in
        if abs(realised(tokens + lengths[nxt]) - share) >= abs(realised(tokens) - share):
            break  # one more row would land further from the request
        picked.append(nxt)
        tokens += lengths[nxt]
    repeats = math.ceil(len(picked) / len(order)) if picked else 0
    if max_repeats is not None and repeats > max_repeats:
        raise MixtureError(
            f"share {share:g} needs each wrong rollout up to {repeats} times (max_repeats={max_repeats}); "
            f"the natural share is {natural_share(records, lengths):.3f}"
        )
    rows = sorted(correct + picked)  # stable: original order, repeats together
    return Mixture(
        records=[dict(records[i]) for i in rows],
        requested=float(share),
        share=realised(tokens),
        correct_rows=len(correct),
        wrong_rows=len(picked),
        correct_tokens=correct_tokens,
        wrong_tokens=tokens,
        max_repeats=repeats,
    )


def build_mixtures(
    rollouts: Sequence[dict],
    shares: Sequence[float | str],
    lengths: Sequence[int],
    seed: int,
    max_repeats: int | None = None,
) -> dict[str, Mixture]:
    """build_mixture for each share, keyed by the share as written ("0.25", "natural")."""
    return {str(s): build_mixture(rollouts, s, lengths, seed, max_repeats) for s in shares}
