"""The study's headline numbers beside ours: one row per quantity of data/study.yaml we measure.

`results` is what `helpers.results.load_results(profile)` returns: the JSON of every
chapter keyed by notebook name. A quantity we did not measure on this profile (a run
that was not trained, an analysis not run) shows as "not measured", never as a guess.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .claims import CLUSTER, LATE_LAYER_SHARE, late_count
from .spread import spread_text, summarise
from .study import format_entry, load_study

Value = float | list[float] | None


class _Ours:
    """Lookups into the chapters' JSON that return None when a number is missing."""

    def __init__(self, results: Mapping[str, Any]):
        self.r = results

    def _get(self, chapter: str, *path: str) -> Any:
        node: Any = self.r.get(chapter)
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return node

    def pair(self, chapter: str, section: str, table: str, a: str, b: str, ordered: bool = False) -> Any:
        node = self._get(chapter, section, table) or {}
        if f"{a}-{b}" in node:
            return node[f"{a}-{b}"]
        return None if ordered else node.get(f"{b}-{a}")

    def cosine(self, a: str, b: str) -> Value:
        return self.pair("03_delta_geometry", "geometry", "global_cosine", a, b)

    def angle(self, which: str, a: str, b: str) -> Value:
        return self.pair("03_delta_geometry", "geometry", f"median_{which}_angle", a, b)

    def method(self, name: str, key: str) -> Value:
        return self._get("03_delta_geometry", "per_method", name, key)

    def pair_entry(self, a: str, b: str, key: str) -> Value:
        for e in self._get("03_delta_geometry", "pairs") or []:
            if {e["a"], e["b"]} == {a, b}:
                return e.get(key)
        return None

    def orth(self, b: str, a: str, late: bool = False) -> Value:
        """b's share outside a's column space (span reading); with `late`, the range over the
        last late_count(layers) layers (the study's last five of 36)."""
        if not late:
            return self.pair("03_delta_geometry", "geometry", "orthogonal_fraction", b, a, ordered=True)
        layers = self.pair(
            "03_delta_geometry", "geometry", "orthogonal_fraction_by_layer", b, a, ordered=True
        )
        return None if not layers else _span(layers[-late_count(len(layers)) :])

    def layers(self) -> int | None:
        layers = self._get("03_delta_geometry", "layers")
        return len(layers) if layers else None

    def lr(self, name: str) -> float | None:
        return self._get("02_training", "runs", name, "lr")

    def path(self, a: str, b: str) -> Value:
        curve = self._get("04_mode_connectivity", "paths", f"{a}-{b}")
        return None if curve is None else [curve["answer_ce"][0], curve["answer_ce"][-1]]

    def cka(self, a: str, b: str, last_share: float | None = None) -> Value:
        layers = self.pair("05_cka", "cka", "by_layer", a, b)
        if not layers:
            return None
        if last_share is None:
            return layers[-1]
        return statistics.fmean(layers[-max(1, round(last_share * len(layers))) :])

    def accuracy(self, name: str) -> Value:
        value = self._get("06_evaluation", "evaluation", "accuracy", name)
        return None if value is None else 100 * value

    def mcnemar(self, a: str, b: str) -> Value:
        return self.pair("06_evaluation", "evaluation", "mcnemar_p", a, b)


def _span(values: Sequence[Value]) -> Value:
    """One number, or [min, max] of several; None if any is missing."""
    if any(v is None for v in values) or not values:
        return None
    flat = [float(v) for v in values]  # type: ignore[arg-type]
    return flat[0] if len(flat) == 1 else [min(flat), max(flat)]


def _mean(values: Sequence[Value]) -> Value:
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(float(v) for v in values)  # type: ignore[arg-type]


def _ratio(a: Value, b: Value) -> Value:
    return None if a is None or b is None or b == 0 else float(a) / float(b)


FIVE = ("sft", "rft", "dft", "rift", "grpo")


def _rows(o: _Ours) -> list[tuple[str, Callable[[], Value]]]:
    others = FIVE
    return [
        ("global_cosine.sft_rft", lambda: o.cosine("sft", "rft")),
        ("global_cosine.sft_rift", lambda: o.cosine("sft", "rift")),
        ("global_cosine.rft_rift", lambda: o.cosine("rft", "rift")),
        ("global_cosine.dft_sft", lambda: o.cosine("dft", "sft")),
        ("global_cosine.dft_rift", lambda: o.cosine("dft", "rift")),
        ("global_cosine.grpo_sft_cluster", lambda: _mean([o.cosine("grpo", m) for m in CLUSTER])),
        ("global_cosine.dpo_sft_cluster", lambda: _span([o.cosine("dpo", m) for m in CLUSTER])),
        *[
            (f"smallest_angle.sft_{m}", lambda m=m: o.angle("smallest", "sft", m))
            for m in ("rft", "rift", "grpo", "dft", "dpo")
        ],
        *[
            (f"largest_angle.sft_{m}", lambda m=m: o.angle("largest", "sft", m))
            for m in ("rft", "rift", "grpo", "dft", "dpo")
        ],
        ("orthogonal_fraction.grpo_sft", lambda: o.orth("grpo", "sft")),
        ("orthogonal_fraction.grpo_sft_last5", lambda: o.orth("grpo", "sft", late=True)),
        (
            "effective_rank.sft_rft_dft_rift",
            lambda: _mean([o.method(m, "effective_rank_median") for m in ("sft", "rft", "dft", "rift")]),
        ),
        ("effective_rank.grpo", lambda: o.method("grpo", "effective_rank_median")),
        ("effective_rank.dpo", lambda: o.method("dpo", "effective_rank_median")),
        ("norm.rft_to_rift", lambda: _span([o.method(m, "norm") for m in ("sft", "rft", "rift")])),
        (
            "norm.dpo_smaller_by",
            lambda: _ratio(_mean([o.method(m, "norm") for m in CLUSTER]), o.method("dpo", "norm")),
        ),
        (
            "top1_output.sft_cluster",
            lambda: _span(
                [
                    o.pair_entry(a, b, "top1_output_mean")
                    for a, b in (("sft", "rft"), ("sft", "rift"), ("rft", "rift"))
                ]
            ),
        ),
        ("top1_output.grpo", lambda: _span([o.pair_entry("grpo", m, "top1_output_mean") for m in CLUSTER])),
        ("top1_output.dft", lambda: _span([o.pair_entry("dft", m, "top1_output_mean") for m in CLUSTER])),
        ("top1_output.dpo", lambda: _mean([o.pair_entry("dpo", m, "top1_output_mean") for m in others])),
        ("top1_input.dpo", lambda: _span([o.pair_entry("dpo", m, "top1_input_mean") for m in others])),
        ("controls.seed_cosine", lambda: o.cosine("sft", "sft_seed")),
        ("controls.lr10x_cosine", lambda: o.cosine("dpo", "dpo_samelr")),
        (
            "controls.lr10x_norm_ratio",
            lambda: _ratio(o.method("dpo_samelr", "norm"), o.method("dpo", "norm")),
        ),
        ("controls.online_grpo_cosine_sft", lambda: o.cosine("online_grpo", "sft")),
        ("controls.online_grpo_orthogonal_fraction", lambda: o.orth("online_grpo", "sft")),
        ("controls.online_grpo_norm", lambda: o.method("online_grpo", "norm")),
        ("controls.sft_norm", lambda: o.method("sft", "norm")),
        ("lmc_ce.grpo_rift", lambda: o.path("grpo", "rift")),
        ("lmc_ce.sft_grpo", lambda: o.path("sft", "grpo")),
        ("cka.sft_rift", lambda: o.cka("sft", "rift")),
        ("cka.grpo_sft_rift_last_layer", lambda: _mean([o.cka("grpo", "sft"), o.cka("grpo", "rift")])),
        ("cka.dpo_late_layers", lambda: _mean([o.cka("grpo", "dpo", 11 / 36), o.cka("dft", "dpo", 11 / 36)])),
        ("gsm8k.five", lambda: _span([o.accuracy(m) for m in others])),
        ("gsm8k.dpo", lambda: o.accuracy("dpo")),
        ("gsm8k.base", lambda: o.accuracy("base")),
        (
            "mcnemar.among_five",
            lambda: _span([o.mcnemar(a, b) for a, b in itertools.combinations(others, 2)]),
        ),
        ("mcnemar.dpo_vs_each", lambda: _span([o.mcnemar("dpo", m) for m in others])),
    ]


def _notes(o: _Ours) -> dict[str, str]:
    """What our number of a row is, where it is not what the study's description says."""
    median = "ours: median over modules with a nonzero update, as chapter 03 prints it"
    notes = {
        key: median
        for key in ("effective_rank.sft_rft_dft_rift", "effective_rank.grpo", "effective_rank.dpo")
    }
    layers = o.layers()
    if layers:
        n = late_count(layers)
        notes["orthogonal_fraction.grpo_sft_last5"] = (
            f"ours: the last {n} of {layers} blocks, the study's share {round(LATE_LAYER_SHARE * 36)}/36"
        )
    low, high = o.lr("dpo"), o.lr("dpo_samelr")
    if low and high:
        note = f"ours: DPO at lr {low:g} against {high:g} ({high / low:.3g}x)"
        notes["controls.lr10x_cosine"] = note
        notes["controls.lr10x_norm_ratio"] = note + ", norm of the larger over the smaller"
    notes["mcnemar.among_five"] = "ours: smallest to largest raw p over the ten pairs"
    return notes


def _fmt(value: Value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not measured"
    if isinstance(value, list):
        return (
            f"{value[0]:.3g} to {value[1]:.3g}" if len(value) == 2 else " -> ".join(f"{v:.3g}" for v in value)
        )
    return f"{value:.3g}"


def headline_table(results: Mapping[str, Any], study: Mapping[str, Any] | None = None):
    """A DataFrame: quantity, the study's value, ours, for every headline number we can measure."""
    import pandas as pd

    study = study or load_study()
    ours = _Ours(results)
    notes = _notes(ours)
    rows = []
    for key, measure in _rows(ours):
        entry = study[key]
        value = measure()
        rows.append(
            {
                "key": key,
                "quantity": entry["description"] + (f" ({notes[key]})" if key in notes else ""),
                "study": format_entry(entry),
                "ours": _fmt(value),
                "ours_value": value,
            }
        )
    return pd.DataFrame(rows).set_index("key")


def headline_over_replicates(results: Sequence[Mapping[str, Any]], study: Mapping[str, Any] | None = None):
    """headline_table of each replicate's results (helpers.replicates.replicate_results): `ours` as
    the mean over replicates with the range, `ours_values` every replicate's value."""
    study = study or load_study()
    tables = [headline_table(r, study) for r in results]
    out = tables[0][["quantity", "study"]].copy()
    values = [[t.at[key, "ours_value"] for t in tables] for key in out.index]
    out["ours"] = [_fmt_over(v) for v in values]
    out["ours_values"] = values
    return out


def _fmt_over(values: Sequence[Value]) -> str:
    """A number over replicates as "mean (min to max)"; a range [low, high] as the mean range,
    and the replicates' widest range after it; "not measured" where no replicate measured it."""
    present = [v for v in values if v is not None]
    if not present:
        return "not measured"
    if not isinstance(present[0], list):
        return spread_text(summarise(values))
    ends = [summarise([None if v is None else v[i] for v in values]) for i in range(len(present[0]))]
    text = _fmt([e["mean"] for e in ends])
    low, high = ends[0]["min"], ends[-1]["max"]
    if len(present) > 1 and (low, high) != (ends[0]["mean"], ends[-1]["mean"]):
        text += f" (replicates: {low:.3g} to {high:.3g})"
    return text if len(present) == len(values) else f"{text} [{len(present)} of {len(values)}]"


STUDY_FORMS = {"rift_paper": "rift", "grpo_paper": "grpo"}


class RenameError(ValueError):
    """Renaming runs would put two entries under one key."""


def rename_methods(obj: Any, mapping: Mapping[str, str] = STUDY_FORMS) -> Any:
    """A copy of results in which `mapping`'s runs take the names of the runs they replace.

    With the default, RIFT and offline GRPO *as the study writes them* (rift_paper,
    grpo_paper) stand in for the published forms: the study's numbers come from its
    forms, so its claims are tested on them first. Every entry that involves a replaced
    run (also a pair of a replaced and a renamed run, e.g. grpo-rift_paper) is dropped
    BEFORE renaming, so no renamed key can land on one of them; a key or {"a", "b"} record
    that two entries would still share raises RenameError. Method names and "a-b" pair
    keys are renamed in every nested dict, and {"a": .., "b": ..} records in lists.
    """
    replaced = set(mapping.values())
    if replaced & set(mapping):
        raise RenameError(f"rename_methods: a run is both renamed and replaced in {dict(mapping)}")

    def rename(name: str) -> str | None:
        parts = name.split("-")
        if any(p in replaced for p in parts):
            return None  # an entry of a replaced run (alone or paired with any other run)
        return "-".join(mapping.get(p, p) for p in parts)

    if isinstance(obj, Mapping):
        if {"a", "b"} <= set(obj) and isinstance(obj["a"], str) and isinstance(obj["b"], str):
            a, b = rename(obj["a"]), rename(obj["b"])
            if a is None or b is None:
                return None
            return {**{k: rename_methods(v, mapping) for k, v in obj.items()}, "a": a, "b": b}
        out, origin = {}, {}
        for key, value in obj.items():
            new = rename(key) if isinstance(key, str) else key
            if new is None:
                continue
            if new in out:
                raise RenameError(f"rename_methods: {origin[new]!r} and {key!r} would both become {new!r}")
            out[new], origin[new] = rename_methods(value, mapping), key
        return out
    if isinstance(obj, list):
        kept = [v for v in obj if not (isinstance(v, str) and v in replaced)]
        pairs = [(rename_methods(v, mapping), v) for v in kept]
        pairs = [(new, orig) for new, orig in pairs if not (new is None and orig is not None)]
        items = [new for new, _ in pairs]
        # a collision can only come from renaming: check the items whose name renaming changed
        keys = [_identity(new) for new in items]
        for key, (_, orig) in zip(keys, pairs, strict=True):
            if key is not None and key != _identity(orig) and keys.count(key) > 1:
                raise RenameError(f"rename_methods: {key!r} appears twice in a list after renaming")
        return items
    if isinstance(obj, str) and obj in mapping:
        return mapping[obj]
    return obj


def _identity(item: Any) -> Any:
    """What makes a list item one run's or one pair's: its name, or its (a, b) record."""
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping) and {"a", "b"} <= set(item):
        return (item["a"], item["b"])
    return None


def verdict_table(claims_by_form: Mapping[str, Sequence[Mapping[str, Any]]]):
    """One row per claim, one verdict column per form of the losses (e.g. study_forms, published_forms)."""
    import pandas as pd

    first = next(iter(claims_by_form.values()))
    columns = {"claim": [c["claim"] for c in first]}
    columns |= {form.replace("_", " "): [c["verdict"] for c in cs] for form, cs in claims_by_form.items()}
    return pd.DataFrame(columns, index=[f"({c['id']})" for c in first])


def checks_markdown(claims: Sequence[Mapping[str, Any]], label: str) -> str:
    """Each claim's checks as one markdown line: which criteria passed."""
    return "\n\n".join(
        f"**({c['id']}), {label}:** "
        + "; ".join(f"{x['test']}: {'yes' if x['ok'] else 'no'}" for x in c["checks"])
        for c in claims
    )


def findings_record(
    claims_by_form: Mapping[str, Sequence[Mapping[str, Any]]], headline, **extra: Any
) -> dict[str, Any]:
    """What 07_findings writes: claims with their checks and verdicts per form (and, for claims
    combined over replicates, each replicate's verdict), the headline table, and any `extra`
    records (definitions, reading match, chance, replicates) as given."""
    keep = ("id", "claim", "criterion", "verdict", "verdicts", "reading", "barrier_kind", "missing", "checks")
    dropped = [c for c in ("quantity", "ours_value") if c in headline.columns]
    return {
        "claims": {form: [{k: c.get(k) for k in keep} for c in cs] for form, cs in claims_by_form.items()},
        "verdicts": {form: {c["id"]: c["verdict"] for c in cs} for form, cs in claims_by_form.items()},
        "headline": headline.drop(columns=dropped).to_dict(orient="index"),
        **extra,
    }
