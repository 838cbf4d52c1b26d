"""The command line of training: one method (or control) of a profile.

    python -m helpers.train --profile P --method M [--control C] [--base DIR] [--rollouts FILE]
                            [--out DIR] [--init DIR] [--debug]

also under `accelerate launch` (e.g. `accelerate launch --cpu --num_processes 2 -m helpers.train ...`).
Every argument and the profile are checked before any stage is built or loaded; missing
inputs (base model, rollouts, LoRA init) come from the pipeline's cached stages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from accelerate import PartialState

from helpers import pipeline
from helpers.cache import runs_root
from helpers.cli import add_debug_flag, reports_errors
from helpers.method_data import METHOD_NAMES, build_method_dataset, load_rollouts
from helpers.profiles import load_profile
from helpers.train import CONTROLS, resolve_run, train_method
from helpers.train_output import TrainConfigError, check_out_dir, last_good_path
from helpers.trainer import LAST_GOOD_MARKERS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help="smoke | tiny | paper | path to a profile .yaml")
    parser.add_argument(
        "--method", required=True, choices=METHOD_NAMES, metavar="METHOD", help=" ".join(METHOD_NAMES)
    )
    parser.add_argument("--control", choices=sorted(CONTROLS), default=None)
    parser.add_argument("--base", help="base model folder or hub id (default: the profile's student)")
    parser.add_argument("--rollouts", help="graded rollouts jsonl (default: the profile's rollouts stage)")
    parser.add_argument("--out", help="output folder (default: <runs>/<profile>/train-<method>[-<control>])")
    parser.add_argument("--init", help="shared LoRA init folder (default: the profile's lora_init-<hash>)")
    return add_debug_flag(parser)


def _check(args: argparse.Namespace, profile, out: Path) -> None:
    """Every argument, before any stage is built: the pair, the folders, the rollouts file."""
    resolve_run(profile, args.method, args.control)
    check_out_dir(out)
    check_out_dir(last_good_path(out), "last_good", LAST_GOOD_MARKERS)
    if args.base and args.base.startswith(("/", ".", "~")) and not Path(args.base).expanduser().is_dir():
        raise TrainConfigError(f"--base {args.base} is not a folder (give a model folder or a hub id)")
    if args.init:
        check_out_dir(args.init, "--init", ("adapter_config.json",))
    if args.rollouts and args.control == "online_grpo":
        load_rollouts(args.rollouts)  # names the file, line and field of a bad record
    elif args.rollouts:
        build_method_dataset(args.rollouts, args.method, profile.train, seed=profile.train.seed)


@reports_errors
def main(argv: list[str] | None = None) -> Path:
    """Command line: train one method (or control) of a profile; returns the adapter folder."""
    args = _parser().parse_args(argv)
    profile = load_profile(args.profile)
    name = f"train-{args.method}" + (f"-{args.control}" if args.control else "")
    out = Path(args.out) if args.out else runs_root() / profile.name / name
    _check(args, profile, out)
    pipeline.configure_environment(profile)
    # Missing inputs come from the pipeline's cached stages (built once, by the main process).
    with PartialState().main_process_first():
        base = args.base or pipeline.student_dir(profile)
        rollouts = args.rollouts or str(pipeline.rollouts_stage(profile) / "rollouts.jsonl")
    init = Path(args.init) if args.init else pipeline.lora_init_dir(profile)
    result = train_method(profile, args.method, base, rollouts, out, init, control=args.control)
    if PartialState().is_main_process:
        print(f"adapter saved to {result}")
    return result


if __name__ == "__main__":
    main()
