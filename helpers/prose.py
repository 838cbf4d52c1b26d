"""Sentences of the book written from the run's own numbers (issue 14.1) and the study's file.

Every number a chapter's prose states about this run comes from here: as a value glued with
myst-nb (``{glue:text}`key` `` in a Markdown cell) or as Markdown generated from the results,
so the prose cannot drift from what the notebooks computed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .study import format_entry, load_study

_DISPLAY = None  # IPython's display, imported on first use so the module loads without IPython


def num(x: float | int | None, digits: int = 3) -> str:
    """A number for prose: integers with thousands separators, floats to `digits` significant."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, int) or float(x).is_integer() and abs(x) >= 1:
        return f"{int(x):,}"
    return f"{x:.{digits}g}"


def pct(x: float | None, digits: int = 0) -> str:
    """A share as a percentage: 0.4167 -> "42%"."""
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def spread(summary: Mapping[str, Any], fmt=num) -> str:
    """A summary over replicates ({mean, min, max, n}) as "mean (min to max over n replicates)"."""
    n = summary.get("n", 1)
    if summary.get("mean") is None:
        return "n/a"
    if n <= 1 or summary["min"] == summary["max"]:
        return fmt(summary["mean"]) + ("" if n <= 1 else f" in each of {n} replicates")
    return f"{fmt(summary['mean'])} ({fmt(summary['min'])} to {fmt(summary['max'])} over {n} replicates)"


def brackets(summary: Mapping[str, Any], fmt=num) -> str:
    """A summary over replicates, compact: "mean [min, max]", or the mean alone when they agree."""
    if summary.get("mean") is None:
        return "n/a"
    if summary.get("n", 1) <= 1 or summary["min"] == summary["max"]:
        return fmt(summary["mean"])
    return f"{fmt(summary['mean'])} [{fmt(summary['min'])}, {fmt(summary['max'])}]"


def study_text(key: str, study: Mapping[str, dict] | None = None) -> str:
    """One of the study's numbers as it states it ("about 0.74", "0.79 to 0.86"), from data/study.yaml."""
    study = load_study() if study is None else study
    if key not in study:
        raise KeyError(f"data/study.yaml has no entry {key!r}")
    return format_entry(study[key])


def study_glue_key(key: str) -> str:
    """The glue name of a study entry: `study.` and the key with dots as underscores."""
    return "study_" + key.replace(".", "_")


def glue_study(keys: Sequence[str], study: Mapping[str, dict] | None = None) -> dict[str, str]:
    """Glue each named study number (see `study_glue_key`) and return the texts."""
    study = load_study() if study is None else study
    values = {study_glue_key(k): study_text(k, study) for k in keys}
    glue_values(values)
    return values


def glue_values(values: Mapping[str, Any]) -> None:
    """Glue each value under its name for `{glue:text}` roles, without showing it in the page."""
    from myst_nb import glue

    for name, value in values.items():
        glue(name, value if isinstance(value, str) else num(value), display=False)


def show(markdown: str) -> None:
    """Display generated Markdown (a summary, a paragraph) in the page."""
    from IPython.display import Markdown, display

    display(Markdown(markdown))


def bullets(lines: Sequence[str]) -> str:
    """Markdown bullet list."""
    return "\n".join(f"- {line}" for line in lines)


# --- chapter 0 and 1 ---------------------------------------------------------------------


def problems_summary(out: Mapping[str, Any]) -> str:
    """Chapter 0's summary from its results."""
    steps = ", ".join(f"{n} with {s} steps" for s, n in out["steps_histogram"].items())
    return bullets(
        [
            f"{num(out['n_train'])} training prompts and {num(out['n_eval'])} held-out problems, fixed by the "
            f"profile's seed; {num(out['train_eval_overlap'])} questions appear in both.",
            f"Reasoning steps per training solution: {steps}.",
            f"The answer checker agrees with GSM8K's own `####` answer on {pct(out['gsm8k_checker_agreement'], 1)} "
            f"of its {num(out['gsm8k_test_n'])} test solutions; it is the single reward and scoring function "
            "of the book.",
        ]
    )


def rollouts_glue(out: Mapping[str, Any], k: int) -> dict[str, str]:
    """The numbers chapter 1's prose quotes about this run's rollouts, as glue texts."""
    r = out["rollouts"]
    return {
        "k": num(k),
        "n_rollouts": num(r["n_rollouts"]),
        "n_prompts": num(r["n_prompts"]),
        "reward_mean": pct(r["reward_mean"]),
        "mixed_groups": num(r["mixed_groups"]),
        "mixed_share": pct(r["mixed_share"]),
        "unique_share": pct(r["unique_share"]),
        "identical_groups": num(r["identical_groups"]),
        "dpo_pairs": num(r["dpo_pairs"]),
        "distinct_dpo_pairs": num(r["distinct_dpo_pairs"]),
        "student_parameters": num(out["student_parameters"]),
    }


def rollouts_summary(out: Mapping[str, Any], k: int) -> str:
    """Chapter 1's summary from its results."""
    g = rollouts_glue(out, k)
    roles = {role: c for role, c in out.items() if isinstance(c, dict) and "greedy" in c}
    picked = "; ".join(
        f"the {role} at step {num(c['step'])} ({c.get('why', '')}; greedy accuracy {pct(c['greedy'])}, "
        f"sampled {pct(c['sampled'])})"
        for role, c in roles.items()
    )
    return bullets(
        [
            f"The student has {g['student_parameters']} parameters. Picked: {picked}.",
            f"{g['n_rollouts']} rollouts ({g['k']} per prompt for {g['n_prompts']} prompts), "
            f"{g['reward_mean']} of them right.",
            f"{g['mixed_groups']} of {g['n_prompts']} groups ({g['mixed_share']}) are mixed, the signal of "
            f"RFT, DPO and GRPO; {g['identical_groups']} groups are {g['k']} copies of one text.",
            f"{g['unique_share']} of the rollouts are distinct texts within their group; DPO gets "
            f"{g['dpo_pairs']} pairs, {g['distinct_dpo_pairs']} of them distinct.",
        ]
    )


def pick_mixed_prompt(rollouts: Sequence[Mapping[str, Any]], prefer: int = 0) -> int | None:
    """The prompt id of a group with a right and a wrong rollout: `prefer` if it is mixed, else the first."""
    rewards: dict[int, set] = {}
    for r in rollouts:
        rewards.setdefault(r["prompt_id"], set()).add(r["reward"] > 0)
    mixed = [pid for pid, seen in rewards.items() if seen == {True, False}]
    return prefer if prefer in mixed else (mixed[0] if mixed else None)


def rollout_pair(rollouts: Sequence[Mapping[str, Any]], prefer: int = 0) -> str:
    """A right and a wrong rollout of one prompt, in full, as Markdown."""
    pid = pick_mixed_prompt(rollouts, prefer)
    if pid is None:
        return "No prompt has both a right and a wrong rollout in this run."
    group = [r for r in rollouts if r["prompt_id"] == pid]
    right = next(r for r in group if r["reward"] > 0)
    wrong = next(r for r in group if r["reward"] <= 0)
    text = [f"**Prompt {pid}.** {group[0]['question']} (reference answer: {group[0]['reference']})", ""]
    for label, r in (("A right rollout", right), ("A wrong rollout", wrong)):
        text += [f"*{label}* (reward {num(r['reward'])}):", "", "```", r["completion"].strip(), "```", ""]
    return "\n".join(text)


# --- chapter 2 ---------------------------------------------------------------------------


def schedule_point(steps: int, at: int, scheduler: str, warmup_ratio: float) -> dict[str, float]:
    """Where step `at` of a `steps`-step run sits: the share of the run and the rate over its peak.

    Uses transformers' own warmup rule and scheduler, as the trainer does.
    """
    import torch
    from transformers import get_scheduler

    warmup = math.ceil(steps * warmup_ratio) if 0 < warmup_ratio < 1 else int(warmup_ratio)
    param = torch.nn.Parameter(torch.zeros(1))
    schedule = get_scheduler(scheduler, torch.optim.SGD([param], lr=1.0), warmup, steps)
    return {"steps": steps, "at": at, "share": at / steps, "rate": float(schedule.lr_lambdas[0](at))}


def step_mapping(train: Any, study: Mapping[str, dict] | None = None) -> str:
    """How the study's "step 1,000 of 1,500" maps onto a profile's steps, as a paragraph."""
    study = load_study() if study is None else study
    ours = schedule_point(train.steps, train.result_step, train.scheduler, train.warmup_ratio)
    theirs = schedule_point(
        int(study["setup.steps"]["value"]),
        int(study["setup.result_step"]["value"]),
        "cosine",
        train.warmup_ratio,
    )

    def where(p: dict) -> str:
        return (
            f"step {num(p['at'])} of {num(p['steps'])} ({pct(p['share'])} of the run, the rate at "
            f"{pct(p['rate'])} of its peak)"
        )

    verdict = (
        "the same point of the schedule"
        if abs(ours["share"] - theirs["share"]) < 0.05
        else "not the same point of the schedule, which any comparison of the two updates has to bear in mind"
    )
    return (
        f"The study analyses {where(theirs)}; this profile analyses {where(ours)}, "
        f"with the same {train.scheduler} schedule and {pct(train.warmup_ratio)} warmup: {verdict}. "
        f"The adapters kept at {', '.join(num(s) for s in train.kept_steps())} give the path in between."
    )


# --- chapter 6 ---------------------------------------------------------------------------


def size_vs_score(
    norms: Sequence[Mapping[str, float]], accuracy: Sequence[Mapping[str, float]], methods: Sequence[str]
) -> dict[str, Any]:
    """Spearman's rank correlation of update norm and accuracy across `methods`, per replicate.

    Replicate j pairs norms[j] with accuracy[j]; methods missing from either are left out, and a
    replicate where every method scores the same (or fewer than three are measured) has none.
    """
    from scipy.stats import spearmanr

    rhos: list[float | None] = []
    for norm, acc in zip(norms, accuracy, strict=True):
        names = [m for m in methods if m in norm and m in acc]
        x, y = [norm[m] for m in names], [acc[m] for m in names]
        tied = len(set(x)) < 2 or len(set(y)) < 2
        rhos.append(None if len(names) < 3 or tied else float(spearmanr(x, y).statistic))
    measured = [r for r in rhos if r is not None]
    if not measured:
        verdict = "not measurable"
    elif len(measured) < len(rhos) or len(measured) < 2:
        verdict = "inconclusive"
    elif all(r > 0 for r in measured):
        verdict = "larger updates score higher"
    elif all(r < 0 for r in measured):
        verdict = "larger updates score lower"
    else:
        verdict = "inconclusive"
    summary = (
        {
            "mean": sum(measured) / len(measured),
            "min": min(measured),
            "max": max(measured),
            "n": len(measured),
        }
        if measured
        else {"mean": None, "min": None, "max": None, "n": 0}
    )
    return {"rho": rhos, "summary": summary, "verdict": verdict, "methods": list(methods)}


def size_vs_score_markdown(result: Mapping[str, Any]) -> str:
    """The answer to "does a larger update score differently?" as a sentence."""
    n = len(result["rho"])
    if result["verdict"] == "not measurable":
        return (
            f"**Does a larger update score differently?** Not measurable on this run: in none of its {n} "
            "replicates do the methods differ in both update norm and accuracy, so there is no ranking to compare."
        )
    s = result["summary"]
    per = ", ".join("n/a" if r is None else f"{r:+.2f}" for r in result["rho"])
    answer = {
        "larger updates score higher": "yes: in every replicate the larger updates score higher",
        "larger updates score lower": "yes: in every replicate the larger updates score lower",
        "inconclusive": "inconclusive: the replicates disagree in sign or some could not measure it",
    }[result["verdict"]]
    return (
        f"**Does a larger update score differently?** Spearman's rank correlation of update norm and "
        f"held-out accuracy across the {len(result['methods'])} methods is "
        f"{spread(s, lambda x: f'{x:+.2f}')} (per replicate: {per}); {answer}. "
        f"With {len(result['methods'])} methods, only a correlation near ±1 in every replicate is a pattern."
    )


def completions_markdown(evaluation: Mapping[str, Mapping[str, Any]], index: int | None = None) -> str:
    """Each model's greedy completion of one held-out problem, as Markdown.

    `evaluation` maps a model name to its evaluation JSON (rows of id, question, reference,
    completion, correct); without `index`, the first problem the models disagree on (else the first).
    """
    names = list(evaluation)
    rows = {n: evaluation[n]["rows"] for n in names}
    count = min(len(r) for r in rows.values())
    if index is None:
        split = [i for i in range(count) if len({rows[n][i]["correct"] for n in names}) > 1]
        index = split[0] if split else 0
    first = rows[names[0]][index]
    text = [f"**Problem {first['id']}.** {first['question']} (reference answer: {first['reference']})", ""]
    for n in names:
        row = rows[n][index]
        mark = "right" if row["correct"] else "wrong"
        text += [f"*{n}* ({mark}):", "", "```", row["completion"].strip() or "(empty)", "```", ""]
    return "\n".join(text)


def training_summary(out: Mapping[str, Any], methods: Sequence[str] | None = None) -> str:
    """Chapter 2's summary from its results: runs, replicates, data passes and update norms.

    `methods` defaults to the runs that are not controls.
    """
    runs, data, norms = out["summary"]["runs"], out["summary"]["data"], out["summary"]["norms"]
    if methods is None:
        methods = [name for name, run in out["runs"].items() if not run.get("control")]
    sizes = ", ".join(f"{m} {brackets(norms[m]['norm'])}" for m in methods if m in norms)
    lines = [
        f"{num(out['replicates'])} replicates; replicate 0 trains {len(out['runs'])} runs "
        f"({', '.join(out['runs'])}). Numbers below: mean over replicates [smallest, largest].",
        f"Update norms ||dW||_F at the result step: {sizes}.",
    ]
    if "sft" in norms and "dpo" in norms and norms["dpo"]["norm"]["mean"]:
        ratio = norms["sft"]["norm"]["mean"] / norms["dpo"]["norm"]["mean"]
        lines.append(f"SFT's update is {num(ratio, 2)} times DPO's (means over replicates).")
    passes = ", ".join(
        f"{m} {brackets(data[m]['passes'], lambda x: num(x, 2))}" for m in methods if m in data
    )
    cut = ", ".join(f"{m} {brackets(data[m]['truncated'])}" for m in methods if m in data)
    dropped = sum(data[m]["dropped"]["mean"] for m in methods if m in data)
    lines.append(f"Passes over each method's data by the result step: {passes}.")
    lines.append(
        f"Rows whose completion was cut at `max_length`: {cut}; prompts dropped, summed over the "
        f"methods: {num(dropped)}."
    )
    first = {m: runs[m]["first_loss"]["mean"] for m in methods if m in runs}
    last = {m: runs[m]["last_loss"]["mean"] for m in methods if m in runs}
    moved = ", ".join(f"{m} {num(first[m])} -> {num(last[m])}" for m in first)
    lines.append(f"Training loss, first to last logged step (means): {moved}.")
    lines += dpo_learning_lines(out.get("dpo_verdicts") or {})
    return bullets(lines)


def dpo_learning_lines(verdicts: Mapping[str, Mapping[str, str | None]]) -> list[str]:
    """One line per DPO run: whether its held-out reward margin says it learned, on each pairs set
    measured (helpers.dpo_margin.verdicts: learns only when every replicate's interval is above 0)."""
    names = {"gold": "gold solution over the base's wrong answer", "unused": "rollout pairs its cap left out"}
    lines = []
    for run, by_set in verdicts.items():
        said = [f"{names.get(kind, kind)}: {v}" for kind, v in by_set.items() if v is not None]
        if said:
            lines.append(f"Does {run} learn? Held-out reward margin, {'; '.join(said)}.")
    return lines


def evaluation_summary(out: Mapping[str, Any], size: Mapping[str, Any], reference: str) -> str:
    """Chapter 6's summary from its results: accuracies, significant pairs, size against score."""
    acc = out["summary"]["evaluation"]["accuracy"]
    runs = [m for m in acc if m != "base" and acc[m]["mean"] is not None]
    lines = [f"Base model: held-out accuracy {spread(acc['base'], pct)}."]
    if runs and len({acc[m]["mean"] for m in runs}) == 1:
        lines.append(f"Every run scores the same mean accuracy, {pct(acc[runs[0]]['mean'])}.")
    elif runs:
        best = max(runs, key=lambda m: acc[m]["mean"])
        worst = min(runs, key=lambda m: acc[m]["mean"])
        lines.append(
            f"Highest mean accuracy: {best}, {spread(acc[best], pct)}; lowest: {worst}, {spread(acc[worst], pct)}."
        )
    counts = []
    for rep in out["per_replicate"]:
        holm = rep["evaluation"].get("mcnemar_p_holm", {})
        counts.append(
            sum(1 for pair, p in holm.items() if reference in pair.split("-") and p is not None and p < 0.05)
        )
    lines.append(
        f"Pairs with {reference} that differ at Holm-adjusted p < 0.05, per replicate: "
        f"{', '.join(num(c) for c in counts)}."
    )
    lines.append(size_vs_score_markdown(size).replace("**", ""))
    return bullets(lines)


def cka_summary(out: Mapping[str, Any]) -> str:
    """Chapter 5's summary from its results: last-layer debiased CKA to the base and to SFT."""
    last = out["summary"]["cka"]["last_layer"]
    lines = [
        f"Debiased CKA on {num(out['n_prompts'])} held-out prompts ({out['pool']}-pooled), "
        f"{num(out['replicates'])} replicates; numbers are last-layer means [smallest, largest]."
    ]
    for side in ("base", "sft"):
        pairs = {p: v for p, v in last.items() if p.startswith(f"{side}-")}
        if pairs:
            low = min(pairs, key=lambda p: pairs[p]["mean"])
            text = ", ".join(
                f"{p.split('-', 1)[1]} {brackets(v, lambda x: f'{x:.4f}')}" for p, v in pairs.items()
            )
            lines.append(f"To {'the base model' if side == 'base' else 'SFT'}: {text}; furthest: {low}.")
    others = {p: v for p, v in last.items() if not p.startswith(("base-", "sft-"))}
    if others:
        text = ", ".join(f"{p} {brackets(v, lambda x: f'{x:.4f}')}" for p, v in others.items())
        lines.append(f"Other pairs: {text}.")
    return bullets(lines)
