"""Choose a profile's learning rates by measurement: train at several rates, score each adapter.

    python -m helpers.lr_sweep --profile tiny --method sft --lrs 1e-4,3e-4,1e-3,3e-3

Every run uses the profile's protocol (steps, batch, schedule, LoRA init) with only the
peak learning rate changed, and is scored by greedy accuracy on held-out problems. The
results are merged into `data/lr_sweep/<profile>.json`, which the training chapter
plots; the file records the profile it was measured on, so a stale sweep is flagged.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import time
from pathlib import Path
from typing import Any

from .cache import REPO_ROOT, atomic_write_json, cached_stage, read_json, stable_hash, stage_folder
from .cli import add_debug_flag, reports_errors
from .profiles import METHODS, VARIANTS, Profile, load_profile

SWEEP_DIR = REPO_ROOT / "data" / "lr_sweep"


def sweep_path(profile_name: str) -> Path:
    """Where a profile's sweep is stored."""
    return SWEEP_DIR / f"{profile_name}.json"


def protocol_hash(profile: Profile) -> str:
    """Hash of everything a sweep depends on except the learning rates themselves."""
    d = profile.to_dict()
    train = {k: v for k, v in d["train"].items() if k not in ("lr", "lr_overrides", "methods", "controls")}
    return stable_hash(
        {
            "model": d["model"],
            "data": d["data"],
            "rollouts": d["rollouts"],
            "lora": d["lora"],
            "train": train,
            "seed": d["seed"],
        }
    )


def sweep(profile: Profile, method: str, lrs: list[float], n_eval: int) -> list[dict[str, Any]]:
    """Train `method` at each learning rate and score it; returns one row per rate."""
    from .evaluate import evaluate_adapters, load_eval_set
    from .pipeline import lora_init_dir, rollouts_stage, run_root, student_dir
    from .train import last_good_path, train_method

    rollouts = rollouts_stage(profile) / "rollouts.jsonl"
    student = student_dir(profile)
    problems = load_eval_set(profile)[:n_eval]
    adapters: dict[str, Path | None] = {"base": None}
    seconds = {}
    for lr in lrs:
        variant = dataclasses.replace(
            profile, train=dataclasses.replace(profile.train, lr=lr, lr_overrides={})
        )

        inputs = {"p": protocol_hash(profile), "lr": lr}
        last_good = last_good_path(stage_folder(f"sweep-{method}", inputs, run_root(profile)))

        def build(tmp: Path, variant: Profile = variant, last_good: Path = last_good) -> None:
            train_method(
                variant,
                method,
                student,
                rollouts,
                tmp / "adapter",
                lora_init_dir(profile),
                last_good_dir=last_good,
            )

        start = time.perf_counter()
        folder = cached_stage(f"sweep-{method}", inputs, build, run_root(profile))
        seconds[f"{lr:g}"] = time.perf_counter() - start
        adapters[f"{lr:g}"] = folder / "adapter"
    results = evaluate_adapters(
        student,
        adapters,
        problems,
        profile.analysis.eval_max_new_tokens,
        profile.analysis.eval_batch_size,
        progress=True,
    )
    base_result = results.pop("base")
    base = base_result["summary"]["accuracy"]
    rows = [
        {
            "lr": float(key),
            "accuracy": r["summary"]["accuracy"],
            "ci_low": r["summary"]["ci_low"],
            "ci_high": r["summary"]["ci_high"],
            "base_accuracy": base,
            "train_seconds": seconds[key],
            **_learning_signs(profile, method, adapters[key], float(key)),
        }
        for key, r in results.items()
    ]
    return rows


def _learning_signs(profile: Profile, method: str, adapter: Path, lr: float) -> dict[str, Any]:
    """Passes over the data, update norm beside the noise norm, and (DPO) the held-out reward margin.

    Accuracy alone can miss a preference loss that learns: DPO moves the likelihood ratio of
    chosen over rejected before greedy answers change (issue 11.2).
    """
    from .cache import read_jsonl
    from .deltas import load_deltas
    from .dpo_check import margin_summary, noise_norm, reward_margins, unused_pairs
    from .dpo_margin import heldout_stage
    from .geometry import global_norm
    from .method_data import load_rollouts
    from .pipeline import lora_init_dir, rollouts_stage, student_dir

    t = profile.train
    meta = read_json(adapter / "train_meta.json")
    out: dict[str, Any] = {
        "passes": meta.get("epochs"),
        "rows": (meta.get("tokenization") or {}).get("kept"),
        "norm": global_norm(load_deltas(adapter)),
        "noise_norm": noise_norm(
            lora_init_dir(profile), lr, t.result_step, t.steps, t.scheduler, t.warmup_ratio, t.weight_decay
        ),
    }
    if method == "dpo":
        student, size = student_dir(profile), profile.model.max_length
        held = unused_pairs(load_rollouts(rollouts_stage(profile) / "rollouts.jsonl"), t)
        if len(held) >= 2:  # the rollout pairs training left out
            out.update(margin_summary(reward_margins(student, adapter, held, t.beta, size)))
        # gold solution vs the base's wrong answer on the book's fresh held-out problems (several
        # hundred pairs on tiny: the sweep's own problems leave too few to resolve DPO's margin)
        gold = margin_summary(
            reward_margins(student, adapter, read_jsonl(heldout_stage(profile) / "pairs.jsonl"), t.beta, size)
        )
        out.update({f"gold_{k}": v for k, v in gold.items()})
    return out


def load_sweep(profile: Profile) -> dict[str, Any] | None:
    """The stored sweep of a profile, with `stale` set when the protocol changed since."""
    path = sweep_path(profile.name)
    if not path.exists():
        return None
    data = read_json(path)
    data["stale"] = data.get("protocol") != protocol_hash(profile)
    return data


def learns(row: dict[str, Any]) -> bool:
    """A swept DPO adapter measurably learned: its held-out reward margin's interval is above 0 and
    its accuracy is not below the base's beyond its interval. Other methods: accuracy above the base's.

    The margin is the gold pairs' where measured (several hundred fresh problems on tiny), else the
    left-out rollout pairs' (under a hundred on tiny, whose interval does not resolve at any rate)."""
    low = row.get("gold_margin_ci_low", row.get("margin_ci_low"))
    if low is not None:
        return low > 0 and row["ci_high"] >= row["base_accuracy"]
    return row["accuracy"] > row["base_accuracy"]


def pick_rate(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The sweep's rate: the most accurate among the rates that learn (ties: the larger reward margin,
    then the smaller rate); None when no rate learns."""
    ok = [r for r in rows if learns(r)]
    if not ok:
        return None
    return max(ok, key=lambda r: (r["accuracy"], r.get("reward_margin", 0.0), -r["lr"]))


def _at(rows: list[dict[str, Any]], lr: float) -> dict[str, Any] | None:
    """The sweep row at rate `lr`, if swept."""
    return next((r for r in rows if math.isclose(r["lr"], lr, rel_tol=1e-9)), None)


def _row_text(row: dict[str, Any]) -> str:
    text = f"accuracy {row['accuracy']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}]"
    if "reward_margin" in row:
        text += (
            f", held-out reward margin {row['reward_margin']:.3f} "
            f"[{row['margin_ci_low']:.3f}, {row['margin_ci_high']:.3f}] (positive on "
            f"{row['reward_accuracy']:.0%} of {row['pairs']} pairs)"
        )
    if "gold_reward_margin" in row:
        text += (
            f"; gold solution over the base's wrong answer on held-out problems {row['gold_reward_margin']:.3f} "
            f"[{row['gold_margin_ci_low']:.3f}, {row['gold_margin_ci_high']:.3f}]"
        )
    if row.get("norm") is not None and row.get("noise_norm"):
        text += f", update norm {row['norm']:.3g} = {row['norm'] / row['noise_norm']:.1f}x the noise norm"
    if row.get("passes") is not None:
        text += f", {row['passes']:.1f} passes over its {row.get('rows') or '?'} rows"
    return text


def sweep_markdown(sweep_data: dict[str, Any], profile: Profile) -> str:
    """Chapter 02's account of the rates, from the sweep it shows: per swept method the rate the sweep
    picks (`pick_rate`), its numbers, and whether the profile uses it."""
    lines = []
    for method, rows in sorted(sweep_data.get("methods", {}).items()):
        rows = sorted(rows, key=lambda r: r["lr"])
        rate = profile.train.lr_for(method)
        pick = pick_rate(rows)
        base = rows[0]["base_accuracy"]
        used = _at(rows, rate)
        if pick is None:
            head = f"no swept rate learns (the base: {base:.1%})"
        else:
            head = f"the sweep picks {pick['lr']:g} ({_row_text(pick)}; the base: {base:.1%})"
        if used is None:
            tail = f"the profile's {rate:g} was not swept"
        elif pick is not None and used is pick:
            tail = f"the profile uses {rate:g}"
        elif pick is None:
            tail = f"the profile uses {rate:g} ({_row_text(used)})"
        else:
            overlap = used["ci_high"] >= pick["ci_low"] and pick["ci_high"] >= used["ci_low"]
            tail = f"the profile uses {rate:g} ({_row_text(used)}), not the sweep's pick" + (
                ", though their accuracy intervals overlap" if overlap else ""
            )
        shared = _at(sweep_data.get("methods", {}).get("sft", []), profile.train.lr)
        if used is not None and method != "sft" and shared and shared.get("norm") and used.get("norm"):
            tail += f", where its update is {shared['norm'] / used['norm']:.1f}x smaller than SFT's at {profile.train.lr:g}"
        lines.append(f"- **{method}**: {head}; {tail}.")
    return "\n".join(lines)


def _rates(text: str) -> list[float]:
    """`--lrs`: comma-separated learning rates, each a finite number > 0."""
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not rates or not all(0 < r < float("inf") for r in rates):
        raise argparse.ArgumentTypeError(f"learning rates must be finite numbers > 0, got {text!r}")
    return rates


@reports_errors
def main(argv: list[str] | None = None) -> int:
    """Command line: sweep one method's learning rate (arguments and profile checked before any work)."""
    parser = argparse.ArgumentParser(prog="python -m helpers.lr_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--method", required=True, choices=METHODS + VARIANTS)
    parser.add_argument("--lrs", required=True, type=_rates, help="comma-separated peak learning rates")
    parser.add_argument("--n-eval", type=int, default=128, help="held-out problems per score")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.n_eval < 1:
        parser.error(f"--n-eval must be at least 1, got {args.n_eval}")
    from .pipeline import configure_environment

    profile = load_profile(args.profile)
    configure_environment(profile)
    rows = sweep(profile, args.method, args.lrs, args.n_eval)
    path = sweep_path(profile.name)
    data = read_json(path) if path.exists() else {}
    if data.get("protocol") != protocol_hash(profile):
        data = {}  # measured under another protocol: start over
    data.update(
        protocol=protocol_hash(profile),
        profile=profile.name,
        n_eval=args.n_eval,
        measured=datetime.date.today().isoformat(),
    )
    data.setdefault("methods", {})[args.method] = rows
    atomic_write_json(path, data)
    for row in rows:
        print(
            f"{args.method} lr={row['lr']:g}: accuracy {row['accuracy']:.3f} (base {row['base_accuracy']:.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
