"""Does the book's own DPO learn? Its held-out reward margin, as cached stages (issue 11.2).

Two stages, each keyed by the folders and knobs it reads:

- `heldout_stage`: fresh held-out problems (generated test-split questions with their own seed,
  so disjoint from the training prompts and the pretraining corpus, which are train-split, and
  with the evaluation set's questions removed), the base decoded greedily once, and the pairs
  (gold worked solution, the base's wrong greedy completion) of the problems it got wrong.
  Shared by every replicate: the base is the same in all of them.
- `margin_stage`: one DPO adapter's implicit reward margin on those pairs and on the rollout
  pairs DPO's cap left out (`dpo_check.unused_pairs`, drawn with the replicate's own seed).

`verdict` judges the margins over replicates as the rest of the book judges claims: DPO learns
when every replicate's 95% interval is above 0, does not when none is, and is inconclusive
otherwise.
"""

from __future__ import annotations

import resource
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .cache import atomic_write_json, atomic_write_jsonl, cached_stage, read_json, read_jsonl
from .data_keys import data_inputs
from .dpo_check import heldout_pairs, margin_summary, reference_logps, reward_margins, unused_pairs
from .profiles import Profile
from .spread import unanimous

STAGE_VERSION = 2
HELDOUT_FACTOR = 3  # fresh problems = this x the evaluation set (tiny: 768 -> about 400 wrong answers)
HELDOUT_SEED_OFFSET = 2  # data.seed is the prompts and eval set, + 1 the pretraining corpus
LEARNS, DOES_NOT, INCONCLUSIVE = "learns", "does not learn", "inconclusive"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def heldout_problems(profile: Profile) -> list[dict[str, str]]:
    """HELDOUT_FACTOR x n_eval_problems problems no stage trains or evaluates on.

    Generated sources: test-split questions drawn with seed data.seed + HELDOUT_SEED_OFFSET, minus
    the evaluation set's. Other sources (paper: GSM8K) have no generator: the evaluation set itself,
    which no run trains on.
    """
    from .evaluate import load_eval_set
    from .problems import generate_problems

    d = profile.data
    eval_set = load_eval_set(profile)
    if d.eval_source != "generated":
        return eval_set
    taken = {p["question"] for p in eval_set}
    n = HELDOUT_FACTOR * d.n_eval_problems
    fresh = generate_problems(
        n + len(taken), d.seed + HELDOUT_SEED_OFFSET, "test", d.min_steps, d.max_steps, d.max_result
    )
    return [p for p in fresh if p["question"] not in taken][:n]


def _heldout_inputs(profile: Profile) -> dict[str, Any]:
    from .pipeline import base_stage, student_dir

    return {
        "v": STAGE_VERSION,
        "base": str(base_stage(profile)),  # the folder's name is the hash of its inputs
        "student": student_dir(profile),
        "data": data_inputs(profile),
        "factor": HELDOUT_FACTOR,
        "seed_offset": HELDOUT_SEED_OFFSET,
        "max_new_tokens": profile.analysis.eval_max_new_tokens,
        "max_length": profile.model.max_length,
    }


def heldout_stage(profile: Profile) -> Path:
    """problems.jsonl, the base's greedy rows (base_rows.jsonl), the gold pairs (pairs.jsonl), the base's
    log-probs of them (ref_logps.json: the reference side of every adapter's margin), meta.json."""
    from transformers import AutoTokenizer

    from .evaluate import evaluate_adapters
    from .pipeline import resolve_device, run_root, student_dir

    a = profile.analysis

    def build(tmp: Path) -> None:
        start = _cpu_seconds()
        problems = heldout_problems(profile)
        student = student_dir(profile)
        base = evaluate_adapters(
            student,
            {"base": None},
            problems,
            a.eval_max_new_tokens,
            a.eval_batch_size,
            device=resolve_device(profile),
        )["base"]
        pairs = heldout_pairs(problems, base["rows"], AutoTokenizer.from_pretrained(student))
        atomic_write_jsonl(tmp / "problems.jsonl", problems)
        atomic_write_jsonl(tmp / "base_rows.jsonl", base["rows"])
        atomic_write_jsonl(tmp / "pairs.jsonl", pairs)
        if pairs:  # the reference side of every adapter's margins, computed once
            atomic_write_json(
                tmp / "ref_logps.json", reference_logps(student, pairs, profile.model.max_length)
            )
        meta = {"problems": len(problems), "pairs": len(pairs), "base_accuracy": base["summary"]["accuracy"]}
        atomic_write_json(tmp / "meta.json", {**meta, "cpu_seconds": _cpu_seconds() - start})

    return cached_stage("dpo_heldout", _heldout_inputs(profile), build, run_root(profile))


def heldout_meta(profile: Profile) -> dict[str, Any]:
    """The held-out set's counts: problems, pairs, the base's accuracy on them, CPU seconds to build."""
    return read_json(heldout_stage(profile) / "meta.json")


def _margin_inputs(profile: Profile, adapter: Path) -> dict[str, Any]:
    from .pipeline import rollouts_stage

    t = profile.train
    return {
        "v": STAGE_VERSION,
        "adapter": str(adapter),  # adapter stage folders are named by the hash of their inputs
        "heldout": str(heldout_stage(profile)),
        "rollouts": str(rollouts_stage(profile)),
        "unused": {"seed": t.seed, "per_prompt": t.dpo_pairs_per_prompt, "max_pairs": t.dpo_max_pairs},
        "beta": t.beta,
        "max_length": profile.model.max_length,
    }


def margin_stage(profile: Profile, adapter: str | Path) -> dict[str, Any]:
    """One DPO adapter's held-out margins: {"gold": summary, "unused": summary or None, "cpu_seconds"}.

    `profile` is the replicate's own (helpers.replicates.replicate_profile): its data-order seed
    draws the pairs DPO trained on, so the left-out ones are that replicate's. Each summary also
    keeps the per-pair `margins`.
    """
    from .method_data import load_rollouts
    from .pipeline import rollouts_stage, run_root, student_dir

    adapter = Path(adapter)
    t = profile.train

    def build(tmp: Path) -> None:
        start = _cpu_seconds()
        folder = heldout_stage(profile)
        student, size = student_dir(profile), profile.model.max_length
        out: dict[str, Any] = {"gold": None, "unused": None}
        gold = read_jsonl(folder / "pairs.jsonl")
        sets = {
            "gold": (gold, read_json(folder / "ref_logps.json") if gold else None),
            "unused": (unused_pairs(load_rollouts(rollouts_stage(profile) / "rollouts.jsonl"), t), None),
        }
        for key, (pairs, ref) in sets.items():
            if len(pairs) >= 2:
                margins = reward_margins(student, adapter, pairs, t.beta, size, ref)
                out[key] = {**margin_summary(margins), "margins": margins.tolist()}
        atomic_write_json(tmp / "margins.json", {**out, "cpu_seconds": _cpu_seconds() - start})

    folder = cached_stage("dpo_margin", _margin_inputs(profile, adapter), build, run_root(profile))
    return read_json(folder / "margins.json")


def replicate_margins(
    profile: Profile, runs: Sequence[Mapping[str, str | Path]], names: Sequence[str] = ("dpo", "dpo_samelr")
) -> list[dict[str, dict[str, Any]]]:
    """Per replicate, {run: margin_stage(...)} for the named runs that replicate trained."""
    from .replicates import replicate_profile

    return [
        {name: margin_stage(replicate_profile(profile, j), r[name]) for name in names if name in r}
        for j, r in enumerate(runs)
    ]


def replicate_verdict(summary: Mapping[str, Any] | None) -> str | None:
    """One replicate: learns when the margin's 95% interval is above 0 (None: not measured)."""
    if summary is None:
        return None
    return LEARNS if summary["margin_ci_low"] > 0 else DOES_NOT


def verdict(summaries: Sequence[Mapping[str, Any] | None]) -> str | None:
    """Over replicates: learns / does not learn only when every replicate says so, else inconclusive;
    None when no replicate measured it (replicates that did not are left out)."""
    labels = [v for v in map(replicate_verdict, summaries) if v is not None]
    return unanimous(labels, LEARNS, DOES_NOT, INCONCLUSIVE) if labels else None


def margin_table(per_replicate: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Rows (run, pairs set, replicate, pairs, margin, interval, share positive, verdict) for a frame."""
    rows = []
    for j, runs in enumerate(per_replicate):
        for name, result in runs.items():
            for kind in ("gold", "unused"):
                s = result.get(kind)
                if s is None:
                    continue
                rows.append(
                    {
                        "run": name,
                        "pairs set": kind,
                        "replicate": j,
                        "pairs": s["pairs"],
                        "margin": s["reward_margin"],
                        "ci_low": s["margin_ci_low"],
                        "ci_high": s["margin_ci_high"],
                        "positive share": s["reward_accuracy"],
                        "verdict": replicate_verdict(s),
                    }
                )
    return rows


def verdicts(per_replicate: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, str | None]]:
    """{run: {pairs set: verdict over the replicates that trained the run}}."""
    names = dict.fromkeys(name for runs in per_replicate for name in runs)
    return {
        name: {
            kind: verdict([(runs[name].get(kind) if name in runs else None) for runs in per_replicate])
            for kind in ("gold", "unused")
        }
        for name in names
    }
