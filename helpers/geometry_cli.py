"""`python -m helpers.geometry A B [C ...]`: the geometry of any PEFT LoRA adapters of one base.

Prints the text table; `--json` writes the full report, `--html` one self-contained page
with the figures. Bad input ends in one `error:` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from helpers.deltas import AdapterError, check_same_base, load_deltas
from helpers.geometry import pairwise_report
from helpers.geometry_table import json_safe, report_table


def _default_names(paths: list[str]) -> list[str]:
    names = [Path(p).resolve().name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.geometry",
        description="Weight-space geometry of PEFT LoRA adapters of one base model.",
    )
    parser.add_argument("adapters", nargs="+", help="PEFT adapter folders (adapter_config.json + weights)")
    parser.add_argument(
        "--k",
        type=int,
        default=10,
        help="top-k singular vectors for principal angles and the top-k orthogonal fraction (default 10)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the full report here")
    parser.add_argument(
        "--html", type=Path, default=None, help="also write a self-contained HTML page with the figures"
    )
    parser.add_argument("--names", default=None, help="comma-separated display names, one per adapter")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the geometry table of two or more LoRA adapters of one base; 0 on success, 2 on bad input."""
    args = _parser().parse_args(argv)
    try:
        if len(args.adapters) < 2:
            raise AdapterError("give at least two adapter folders to compare")
        if args.k < 1:
            raise AdapterError(f"--k must be positive, got {args.k}")
        names = args.names.split(",") if args.names else _default_names(args.adapters)
        if len(names) != len(args.adapters) or len(set(names)) != len(names):
            raise AdapterError(f"--names needs {len(args.adapters)} distinct names, got {args.names!r}")
        for out in (args.json, args.html):
            if out is not None and out.is_dir():
                raise AdapterError(f"{out} is a folder; give a file name to write the report to")
        base = check_same_base(args.adapters)
        deltas = {n: load_deltas(p) for n, p in zip(names, args.adapters, strict=True)}
        report = pairwise_report(deltas, k=args.k)
    except AdapterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report["base_model"] = base
    report["adapters"] = dict(zip(names, [str(Path(p).resolve()) for p in args.adapters], strict=True))
    print(report_table(report))
    try:
        if args.json is not None:
            from helpers.cache import atomic_write_json

            atomic_write_json(args.json, json_safe(report))
            print(f"\nwrote {args.json}")
        if args.html is not None:
            from helpers.report_html import write_report_html

            write_report_html(args.html, report)
            print(f"\nwrote {args.html}")
    except OSError as err:
        print(f"error: cannot write the report: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
