"""Chapter 08's own runs and measurements, each a cached stage beside the pipeline's.

Two kinds of training run, both through `helpers.train.train_method` under the pipeline's
protocol for the replicate (its shared LoRA init, steps, batch, schedule, data-order seed):
SFT on a dose-response mixture (`helpers.mixtures`: only the rows differ) and a loss of the
contrastive family (only the loss differs, at DPO's learning rate). Each is keyed by the
pipeline's adapter inputs of the replicate plus what differs, so a rerun trains nothing;
the main runs are the pipeline's own (`adapter_stage`), never retrained here, and two
mixture levels are main runs row for row: share 0 is RFT's data, the natural share SFT's.
Measurements that cost model passes (base samples and forward KL, greedy accuracy) are
cached stages too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import pipeline
from .cache import atomic_write_json, cached_stage, is_done, read_json, stage_folder
from .profiles import Profile, profile_source
from .replicates import replicate_ids, replicate_profile

BEYOND_VERSION = 1  # bump when a stage below changes what it writes
CONTRASTIVE = ("ipo", "dpo_norm", "simpo", "kto")
NATURAL = "natural"
# Mixture levels that are a main run row for row (helpers.mixtures: every correct rollout once,
# in order; share 0 adds no wrong one, the natural share all of them, each once).
REUSED_RUNS = {"0": "rft", NATURAL: "sft"}


class BeyondError(ValueError):
    """A chapter-08 design or request that cannot be run; the message names the argument."""


@dataclass(frozen=True)
class Design:
    """What chapter 08 trains and measures on one profile (its cost lives here)."""

    shares: tuple[float | str, ...]  # wrong-token shares of the SFT mixtures; "natural" = SFT's own
    contrastive: tuple[str, ...]  # contrastive losses trained beside DPO
    contrastive_replicates: int  # the first n replicates train them
    kl_prompts: int  # held-out prompts of the forward-KL measure
    kl_samples: int  # base completions per prompt
    lmc_points: int  # points along each connectivity path

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Per profile. smoke: seconds in the tests. tiny: the book's budget (~2-3 min on 2 cores, one
# 100-step run ~20 s, a two-block contrastive run ~40 s): shares 0 and natural are the RFT and
# SFT runs, so one mixture is trained per replicate; SimPO (reference-free) and KTO (unpaired)
# are the two losses that are not DPO re-weighted, trained in two replicates so their verdicts
# can hold or fail; IPO and length-normalised DPO join them on `paper`.
DESIGNS = {
    "smoke": Design((0.0, 0.5, NATURAL), ("simpo", "kto"), 2, 8, 2, 3),
    "tiny": Design((0.0, 0.5, NATURAL), ("simpo", "kto"), 2, 64, 2, 6),
    "paper": Design((0.0, 0.25, 0.5, 0.75, NATURAL), CONTRASTIVE, 3, 200, 2, 11),
}


def share_key(share: float | str) -> str:
    """A share as the stages and results name it: "0", "0.25", "natural"."""
    return NATURAL if share == NATURAL else f"{float(share):g}"


def parse_shares(text: str) -> tuple[float | str, ...]:
    """'0,0.5,natural' -> (0.0, 0.5, 'natural'); each number in [0, 1)."""
    out: list[float | str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == NATURAL:
            out.append(NATURAL)
            continue
        try:
            value = float(part)
        except ValueError:
            raise BeyondError(f"SHARES: {part!r} is neither a number in [0, 1) nor 'natural'") from None
        if not 0 <= value < 1:
            raise BeyondError(f"SHARES: {value:g} is outside [0, 1)")
        out.append(value)
    return tuple(out)


def design_for(
    profile: Profile, shares: str = "", contrastive: str = "", contrastive_replicates: int = 0
) -> Design:
    """The profile's design (DESIGNS, `paper`'s for a profile not listed), with the notebook's overrides."""
    design = DESIGNS.get(profile.name, DESIGNS["paper"])
    if shares:
        design = dataclasses.replace(design, shares=parse_shares(shares))
    if contrastive:
        methods = tuple(m.strip() for m in contrastive.split(",") if m.strip())
        unknown = [m for m in methods if m not in CONTRASTIVE]
        if unknown:
            raise BeyondError(f"CONTRASTIVE: unknown {unknown}; expected some of {', '.join(CONTRASTIVE)}")
        design = dataclasses.replace(design, contrastive=methods)
    if contrastive_replicates:
        design = dataclasses.replace(design, contrastive_replicates=contrastive_replicates)
    n = min(design.contrastive_replicates, profile.train.replicates)
    if len({share_key(s) for s in design.shares}) < 2:
        raise BeyondError(f"SHARES: a dose-response needs at least two levels, got {design.shares}")
    return dataclasses.replace(design, contrastive_replicates=n)


# --- stage keys ----------------------------------------------------------------------


def _adapter_inputs(profile: Profile) -> dict[str, Any]:
    """The pipeline's adapter inputs of this (replicate) profile, without the run's name."""
    return {
        "v": pipeline.STAGE_VERSIONS["adapter"],
        "rollouts": pipeline._rollout_inputs(profile),
        "lora": pipeline._lora_inputs(profile),
        "train": pipeline.train_inputs(profile),
    }


def _rollouts(profile: Profile) -> list[dict]:
    from .rollouts import read_rollouts

    return read_rollouts(pipeline.rollouts_stage(profile) / "rollouts.jsonl")


def completion_lengths(profile: Profile) -> list[int]:
    """Completion tokens of every rollout as the SFT loss sees them (cached: shared by all mixtures)."""
    from transformers import AutoTokenizer

    from .mixtures import completion_tokens

    inputs = {
        "v": BEYOND_VERSION,
        "rollouts": pipeline._rollout_inputs(profile),
        "max_length": profile.model.max_length,
    }

    def build(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(pipeline.student_dir(profile))
        atomic_write_json(
            tmp / "lengths.json", completion_tokens(_rollouts(profile), tokenizer, inputs["max_length"])
        )

    return read_json(
        cached_stage("completion_lengths", inputs, build, pipeline.run_root(profile)) / "lengths.json"
    )


# --- dose-response mixtures --------------------------------------------------------


def mixture_info(profile: Profile, share: float | str, replicate: int = 0) -> dict[str, Any]:
    """What the mixture of `share` holds (Mixture.summary) and which run trains on it."""
    from .mixtures import build_mixture

    rp = replicate_profile(profile, replicate)
    mixture = build_mixture(_rollouts(rp), share, completion_lengths(rp), seed=rp.train.seed)
    key = share_key(share)
    return {"key": key, "run": REUSED_RUNS.get(key, f"mixture-{key}"), **mixture.summary()}


def _mixture_stage(profile: Profile, share: float | str, replicate: int) -> tuple[str, dict[str, Any]]:
    """The stage name and inputs of SFT on the mixture of `share` in replicate `replicate`."""
    key = share_key(share)
    inputs = {
        **_adapter_inputs(replicate_profile(profile, replicate)),
        "beyond": BEYOND_VERSION,
        "mixture": key,
    }
    return f"mixture-{key}", inputs


def train_mixture(profile: Profile, share: float | str, replicate: int = 0) -> Path:
    """SFT on the mixture of `share` in replicate `replicate` (always trained: no reuse of a main run)."""
    from .mixtures import build_mixture
    from .seeding import seed_everything
    from .train import last_good_path, train_method

    rp = replicate_profile(profile, replicate)
    stage, inputs = _mixture_stage(profile, share, replicate)
    last_good = last_good_path(stage_folder(stage, inputs, pipeline.run_root(rp)))

    def build(tmp: Path) -> None:
        mixture = build_mixture(_rollouts(rp), share, completion_lengths(rp), seed=rp.train.seed)
        atomic_write_json(tmp / "mixture.json", mixture.summary())
        seed_everything(rp.train.seed)
        train_method(
            rp,
            "sft",
            pipeline.student_dir(rp),
            mixture.records,
            tmp / "adapter",
            pipeline.lora_init_dir(rp),
            last_good_dir=last_good,
        )

    return cached_stage(stage, inputs, build, pipeline.run_root(rp)) / "adapter"


def mixture_adapter(profile: Profile, share: float | str, replicate: int = 0) -> Path:
    """The adapter of SFT on the mixture of `share`: the main RFT / SFT run where the data are theirs."""
    reused = REUSED_RUNS.get(share_key(share))
    if reused is not None:
        return pipeline.adapter_stage(replicate_profile(profile, replicate), reused)
    return train_mixture(profile, share, replicate)


# --- the contrastive family --------------------------------------------------------


def contrastive_profile(profile: Profile, method: str) -> Profile:
    """The profile with `method` at DPO's learning rate (train.lr_overrides), everything else as is."""
    if method not in CONTRASTIVE:
        raise BeyondError(f"method {method!r} is not a contrastive loss ({', '.join(CONTRASTIVE)})")
    t = profile.train
    train = dataclasses.replace(t, lr_overrides={**t.lr_overrides, method: t.lr_for("dpo")})
    copy = dataclasses.replace(profile, train=train)
    if profile_source(profile) is not None:
        object.__setattr__(copy, "_source", profile_source(profile))
    return copy


def _contrastive_stage(profile: Profile, method: str, replicate: int) -> tuple[str, dict[str, Any]]:
    """The stage name and inputs of contrastive `method` in replicate `replicate`."""
    from .losses import loss_hparams

    rp = contrastive_profile(replicate_profile(profile, replicate), method)
    inputs = {
        **_adapter_inputs(replicate_profile(profile, replicate)),
        "beyond": BEYOND_VERSION,
        "method": method,
        "lr": rp.train.lr_for(method),
        "hparams": loss_hparams(method, rp.train),
    }
    return f"contrastive-{method}", inputs


def contrastive_adapter(profile: Profile, method: str, replicate: int = 0) -> Path:
    """`method` trained on the rollouts (pairs as DPO's; KTO: every rollout) at DPO's learning rate."""
    from .seeding import seed_everything
    from .train import last_good_path, train_method

    rp = contrastive_profile(replicate_profile(profile, replicate), method)
    stage, inputs = _contrastive_stage(profile, method, replicate)
    last_good = last_good_path(stage_folder(stage, inputs, pipeline.run_root(rp)))

    def build(tmp: Path) -> None:
        seed_everything(rp.train.seed)
        rollouts = pipeline.rollouts_stage(rp) / "rollouts.jsonl"
        train_method(
            rp,
            method,
            pipeline.student_dir(rp),
            rollouts,
            tmp / "adapter",
            pipeline.lora_init_dir(rp),
            last_good_dir=last_good,
        )

    return cached_stage(stage, inputs, build, pipeline.run_root(rp)) / "adapter"


# --- every run of the chapter ------------------------------------------------------


@dataclass
class Runs:
    """The adapters of one replicate: main runs, mixtures by share key, contrastive runs."""

    replicate: int
    main: dict[str, Path]
    mixtures: dict[str, Path]
    mixture_info: dict[str, dict[str, Any]]
    contrastive: dict[str, Path]

    def methods(self) -> dict[str, Path]:
        """Main methods and contrastive runs, the runs every method-level measure reads."""
        return {**self.main, **self.contrastive}


@contextmanager
def timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to seconds[name]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def collect_runs(profile: Profile, design: Design, seconds: dict[str, float] | None = None) -> list[Runs]:
    """Every replicate's runs, trained where missing: the main methods, then mixtures, then contrastive."""
    from .progress import tqdm

    seconds = {} if seconds is None else seconds
    with timed(seconds, "training"):
        _train_missing(profile, design)
    out = []
    for j in tqdm(replicate_ids(profile), desc="replicates"):
        rp = replicate_profile(profile, j)
        with timed(seconds, "main runs"):
            main = pipeline.adapters(rp, list(profile.train.methods))
        with timed(seconds, "mixtures"):
            info = {share_key(s): mixture_info(profile, s, j) for s in design.shares}
            mixtures = {share_key(s): mixture_adapter(profile, s, j) for s in design.shares}
        with timed(seconds, "contrastive runs"):
            chosen = design.contrastive if j < design.contrastive_replicates else ()
            contrastive = {m: contrastive_adapter(profile, m, j) for m in chosen}
        out.append(Runs(j, main, mixtures, info, contrastive))
    return out


def _train_missing(profile: Profile, design: Design, workers: int | None = None) -> None:
    """Train every run of the chapter not yet built, concurrently (helpers.parallel): the main
    methods of every replicate, then the mixtures and contrastive runs, which read them."""
    from .parallel import prepare_upstream, run_calls, train_adapters

    ids = replicate_ids(profile)
    train_adapters(
        [(replicate_profile(profile, j), m) for j in ids for m in profile.train.methods],
        workers,
        [f"{m} (replicate {j})" for j in ids for m in profile.train.methods],
    )
    calls = []
    for j in ids:
        root = pipeline.run_root(replicate_profile(profile, j))
        for share in design.shares:
            if share_key(share) not in REUSED_RUNS and not is_done(
                stage_folder(*_mixture_stage(profile, share, j), root)
            ):
                calls.append(
                    (
                        _build_run,
                        ("mixture", profile, share, j),
                        f"mixture {share_key(share)} (replicate {j})",
                    )
                )
        for method in design.contrastive if j < design.contrastive_replicates else ():
            if not is_done(stage_folder(*_contrastive_stage(profile, method, j), root)):
                calls.append((_build_run, ("contrastive", profile, method, j), f"{method} (replicate {j})"))
    if calls:
        prepare_upstream([replicate_profile(profile, j) for j in ids])
        for j in ids:
            completion_lengths(replicate_profile(profile, j))  # shared by every mixture: once, here
        run_calls(calls, workers)


def _build_run(kind: str, profile: Profile, what: float | str, replicate: int) -> None:
    """Worker job: one mixture or contrastive run of the chapter (a module-level function: picklable)."""
    pipeline.configure_environment(profile)
    if kind == "mixture":
        train_mixture(profile, what, replicate)
    else:
        contrastive_adapter(profile, str(what), replicate)


def step_adapters(profile: Profile, run_dir: str | Path) -> dict[int, Path]:
    """A run's adapters at every kept step (train.save_steps and result_step)."""
    from .checkpoints import adapter_at_step

    t = profile.train
    return {s: adapter_at_step(run_dir, s, t.result_step) for s in t.kept_steps()}


def stage_folders(profile: Profile) -> set[str]:
    """Names of the finished stage folders of a profile: what a rerun should find and not build again."""
    root = pipeline.run_root(profile)
    return {p.name for p in root.iterdir() if p.is_dir() and is_done(p)} if root.is_dir() else set()


def runs_frame(by_replicate: Sequence[Runs]):
    """What each replicate trains or reuses: main runs, mixtures (level: run), contrastive losses."""
    import pandas as pd

    rows = []
    for r in by_replicate:
        rows.append(
            {
                "replicate": r.replicate,
                "main runs (pipeline)": ", ".join(r.main),
                "mixtures (share: run)": ", ".join(f"{k}: {i['run']}" for k, i in r.mixture_info.items()),
                "realised wrong shares": ", ".join(f"{i['share']:.3f}" for i in r.mixture_info.values()),
                "contrastive (DPO's lr)": ", ".join(r.contrastive) or "-",
            }
        )
    return pd.DataFrame(rows).set_index("replicate")
