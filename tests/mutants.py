"""Plant known bugs one at a time and check that the tests catch each one: `python -m tests.mutants`.

A developer's check, not part of CI (pytest does not collect this file). Each mutant is a
textual edit of one file, made in a temporary copy of the repository: the working tree is
never touched, so an interrupted run leaves no planted bug behind. The tests that guard
the mutated code then run in that copy (`pytest -x -q`). A mutant is

    caught  pytest reports failing tests (exit code 1),
    missed  the tests pass with the bug in place,
    stale   its target text is no longer in the file (update the mutant below),
    error   pytest could not run (any other exit code).

The unmutated copy runs the same tests first; they must pass, or nothing is concluded.
Exit status 0 only when every mutant is caught.

    python -m tests.mutants               # every mutant (a few minutes on two cores)
    python -m tests.mutants -k barrier    # the mutants whose name contains "barrier"
    python -m tests.mutants --list        # names, files and tests, without running
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOSSES_FILE = "helpers/losses.py"
LOSS_TESTS = ("tests/unit/test_losses.py", "tests/unit/test_contrastive.py")  # the second once it exists
TRAINER_LOSS = ("tests/unit/test_trainer_loss.py",)
PARITY = ("tests/unit/test_trl_parity.py",)
LOGPS_GROUPS = ("tests/unit/test_logps_groups.py",)
BARRIER_FILE = "helpers/lmc_measures.py"  # helpers.connectivity re-exports barrier from here
LENGTH_BATCHES = ("tests/unit/test_connectivity_speed.py",)
BARRIER = ("tests/unit/test_connectivity.py", "-k", "barrier")
GEOMETRY = ("tests/unit/test_geometry.py",)
CKA = ("tests/unit/test_cka.py",)
REPRODUCTION = ("tests/unit/test_reproduction.py", "tests/unit/test_reproduction_read.py")
PROFILES = ("tests/unit/test_profiles.py",)
SAME_INIT = ("tests/unit/test_train.py::test_every_method_starts_from_the_same_init",)


class Stale(Exception):
    """The text a mutant edits is not in the file any more."""


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # the file to edit, relative to the repository root
    edit: Callable[[str], str]  # source -> source with the bug planted; raises Stale
    tests: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions


def replace(old: str, new: str, count: int = 1) -> Callable[[str], str]:
    """An edit that swaps `old` (which must occur exactly `count` times) for `new`."""

    def edit(source: str) -> str:
        found = source.count(old)
        if found != count:
            raise Stale(f"expected {count} occurrence(s) of {old!r}, found {found}")
        return source.replace(old, new)

    return edit


def _function(source: str, name: str) -> ast.FunctionDef:
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise Stale(f"no function {name}()")


def negate_loss(function: str) -> Callable[[str], str]:
    """An edit that flips the sign of the loss a function returns (`return loss, metrics`)."""

    def edit(source: str) -> str:
        last = _function(source, function).body[-1]
        if not (isinstance(last, ast.Return) and isinstance(last.value, ast.Tuple) and last.value.elts):
            raise Stale(f"{function}() does not end in `return loss, metrics`")
        loss = last.value.elts[0]
        # ast offsets are UTF-8 byte columns
        data = source.encode()
        starts = [0]
        for line in data.splitlines(keepends=True):
            starts.append(starts[-1] + len(line))
        a = starts[loss.lineno - 1] + loss.col_offset
        b = starts[loss.end_lineno - 1] + loss.end_col_offset
        return (data[:a] + b"-(" + data[a:b] + b")" + data[b:]).decode()

    return edit


def loss_functions(source: str) -> list[str]:
    """Every function that a loss of the LOSSES registry ends in, e.g. dpo -> dpo_loss."""
    names: list[str] = []
    for node in ast.parse(source).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "LOSSES" and isinstance(node.value, ast.Dict):
            names = [v.id for v in node.value.values if isinstance(v, ast.Name)]
    if not names:
        raise Stale("no LOSSES registry")
    out = []
    for name in names:
        last = _function(source, name).body[-1]
        # a wrapper that returns another loss's call (dpo -> dpo_loss) is flipped where that loss returns
        if isinstance(last, ast.Return) and isinstance(last.value, ast.Call):
            func = last.value.func
            name = func.id if isinstance(func, ast.Name) else name
        if name not in out:
            out.append(name)
    return out


def mutants() -> list[Mutant]:
    """Every planted bug and the tests that must catch it."""
    try:
        flips = loss_functions((REPO / LOSSES_FILE).read_text())
        out = [Mutant(f"sign flip: {f}", LOSSES_FILE, negate_loss(f), LOSS_TESTS) for f in flips]
    except Stale as err:
        message = str(err)

        def stale(_source: str) -> str:
            raise Stale(message)

        out = [Mutant("sign flip: every loss", LOSSES_FILE, stale, LOSS_TESTS)]
    out += [
        Mutant(
            "dpo: chosen and rejected swapped",
            LOSSES_FILE,
            replace(
                "chosen, rejected = (logps * m).sum(dim=1).chunk(2)",
                "rejected, chosen = (logps * m).sum(dim=1).chunk(2)",
            ),
            LOSS_TESTS + TRAINER_LOSS + PARITY,
        ),
        Mutant(
            "dpo: rewards_accuracy counts negative margins",
            LOSSES_FILE,
            replace('"rewards_accuracy": (margin > 0)', '"rewards_accuracy": (margin < 0)'),
            LOSS_TESTS + PARITY,
        ),
        Mutant(
            "rft: keeps reward >= 0 (the wrong rollouts too)",
            LOSSES_FILE,
            replace("kept = m * (reward > 0)", "kept = m * (reward >= 0)"),
            LOSS_TESTS,
        ),
        Mutant(
            "rift: negative branch with the wrong sign",
            LOSSES_FILE,
            replace("-r * logps.exp()", "r * logps.exp()"),
            LOSS_TESTS,
        ),
        Mutant(
            "compute_loss: completion mask shifted by one token",
            "helpers/trainer.py",
            replace('mask = inputs["completion_mask"][:, 1:]', 'mask = inputs["completion_mask"][:, :-1]'),
            TRAINER_LOSS,
        ),
        Mutant(
            "compute_loss: prompt tokens in the loss (attention mask)",
            "helpers/trainer.py",
            replace('mask = inputs["completion_mask"][:, 1:]', 'mask = inputs["attention_mask"][:, 1:]'),
            TRAINER_LOSS,
        ),
        Mutant(
            "collator: completion mask shifted by one token",
            "helpers/trainer.py",
            replace(
                "completion_mask[i, : len(seq)] = torch.tensor(mask)",
                "completion_mask[i, 1 : len(seq)] = torch.tensor(mask[:-1])",
            ),
            TRAINER_LOSS + PARITY,
        ),
        Mutant(
            "dpo reference: adapter not disabled",
            "helpers/trainer.py",
            replace("with model.disable_adapter():", "with torch.no_grad():"),
            TRAINER_LOSS,
        ),
        Mutant(
            "tokenize_pair: completion mask shifted by one token",
            "helpers/prompting.py",
            replace(
                "[0] * len(prompt_ids) + [1] * len(completion_ids)",
                "[0] * (len(prompt_ids) - 1) + [1] * (len(completion_ids) + 1)",
            ),
            PARITY,
        ),
        Mutant(
            "train_method: DPO starts from another LoRA init",
            "helpers/train.py",
            replace(
                "init_dir = _init_for(profile, base_dir, init_dir, control)",
                'init_dir = _init_for(profile, base_dir, init_dir, control or ("sft_seed" if method == "dpo" else None))',
            ),
            SAME_INIT,
        ),
        Mutant(
            "barrier: midpoint only",
            BARRIER_FILE,
            replace("max(np.max(y - line), 0.0)", "max((y - line)[len(y) // 2], 0.0)"),
            BARRIER,
        ),
        Mutant(
            "barrier: t not sorted",
            BARRIER_FILE,
            replace("    t, y = t[order], y[order]\n", ""),
            BARRIER,
        ),
        Mutant(
            "barrier: chord through t = 0 instead of the first t",
            BARRIER_FILE,
            replace("(t - t[0]) / (t[-1] - t[0])", "t / t[-1]"),
            BARRIER,
        ),
        Mutant(
            "barrier: endpoint_mean minus the larger endpoint",
            BARRIER_FILE,
            replace("np.max(y) - (y[0] + y[-1]) / 2", "np.max(y) - max(y[0], y[-1])"),
            BARRIER,
        ),
        Mutant(
            "length batches longest first",
            "helpers/logps.py",
            replace("key=lambda i: lengths[i])", "key=lambda i: -lengths[i])"),
            LENGTH_BATCHES,
        ),
        Mutant(
            "length batches: token budget of a batch ignored",
            "helpers/logps.py",
            replace("(max_tokens is not None and grown * lengths[i] > max_tokens)", "False"),
            LENGTH_BATCHES,
        ),
        Mutant(
            "token_logps: length groups put back in sorted order, not the batch's",
            "helpers/logps.py",
            replace("torch.cat(parts)[torch.argsort(order)]", "torch.cat(parts)[order]"),
            LOGPS_GROUPS,
        ),
        Mutant(
            "token_logps: a left-padded batch trimmed as if right-padded",
            "helpers/logps.py",
            replace(
                "return lengths if bool((attention_mask.bool() == expected).all()) else None",
                "return lengths",
            ),
            LOGPS_GROUPS,
        ),
        Mutant(
            "subspace angles: sines not re-ordered (scipy's misaligned arcsin branch)",
            "helpers/subspaces.py",
            replace("[:k].flip(0).clamp(0.0, 1.0)", "[:k].clamp(0.0, 1.0)"),
            GEOMETRY,
        ),
        Mutant(
            "subspace angles: arccos below 45 degrees, arcsin above",
            "helpers/subspaces.py",
            replace("small = cos**2 >= 0.5", "small = cos**2 < 0.5"),
            GEOMETRY,
        ),
        Mutant(
            "cka_by_layer: layers paired in reverse",
            "helpers/cka.py",
            replace("zip(states_a, states_b, strict=True)", "zip(states_a, states_b[::-1], strict=True)"),
            CKA,
        ),
        Mutant(
            "cka_by_layer: ignores debiased",
            "helpers/cka.py",
            replace("linear_cka(a, b, debiased=debiased) for a, b", "linear_cka(a, b) for a, b"),
            CKA,
        ),
        Mutant(
            "reproduction: McNemar's p ignored (any accuracy gap counts)",
            "helpers/reproduction_read.py",
            replace("return 0 if p >= MCNEMAR_ALPHA or xa == xb", "return 0 if xa == xb"),
            REPRODUCTION,
        ),
        Mutant(
            "reproduction: an ordered pair read in either order",
            "helpers/reproduction_read.py",
            replace("return None if ordered else table.get", "return table.get"),
            REPRODUCTION,
        ),
        Mutant(
            "profiles: the tiny-only ranges never checked",
            "helpers/profiles.py",
            replace("_RANGES + (_TINY_RANGES if tiny else ())", "_RANGES"),
            PROFILES,
        ),
        Mutant(
            "profiles: unknown keys accepted",
            "helpers/profiles.py",
            replace("    if unknown:\n        keys = ", "    if False:\n        keys = "),
            PROFILES,
        ),
    ]
    return out


def copy_repo(dest: Path) -> None:
    """The working tree's tracked and untracked-but-not-ignored files, copied into dest."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
        files = [f for f in listed.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: copy all but build output
        ignore = shutil.ignore_patterns(".git", "_build", "runs", ".venv", "__pycache__", ".*_cache")
        shutil.copytree(REPO, dest, ignore=ignore, dirs_exist_ok=True)
        return
    for name in files:
        src = REPO / name
        if src.is_file():  # skip files deleted in the working tree but still in the index
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_pytest(root: Path, args: tuple[str, ...]) -> tuple[int, str, float]:
    """pytest -x -q on `args` in `root`, importing `helpers` from there; (exit code, output, seconds)."""
    # test files that do not exist (yet) are left out; options and their values are kept
    args = tuple(
        a
        for i, a in enumerate(args)
        if a.startswith("-") or (i > 0 and args[i - 1] == "-k") or (root / a.split("::")[0]).exists()
    )
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore", *args]
    start = time.time()
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    return done.returncode, done.stdout + done.stderr, time.time() - start


def first_failure(output: str) -> str:
    """The test that failed first, from pytest's short summary."""
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return match.group(1).split("/")[-1] if match else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="run only the mutants whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in mutants() if args.k.lower() in m.name.lower()]
    if not chosen:
        print(f"no mutant matches {args.k!r}", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name}\n    {m.path} -> {' '.join(m.tests)}")
        return 0

    rows: list[tuple[str, str, str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="wsg-mutants-") as tmp:
        root = Path(tmp) / "repo"
        copy_repo(root)
        # the unmutated code must pass first: plain test files in one run, each -k selection on its own
        plain = tuple(
            dict.fromkeys(t for m in chosen if not any(a.startswith("-") for a in m.tests) for t in m.tests)
        )
        selections = [m.tests for m in chosen if any(a.startswith("-") for a in m.tests)]
        for tests in dict.fromkeys([plain, *selections] if plain else selections):
            code, output, seconds = run_pytest(root, tests)
            print(
                f"baseline {' '.join(tests)}: {'pass' if code == 0 else 'FAIL'} ({seconds:.0f} s)", flush=True
            )
            if code != 0:
                print(output[-3000:], file=sys.stderr)
                print("the tests fail without any planted bug: fix them first", file=sys.stderr)
                return 2
        for m in chosen:
            target = root / m.path
            original = target.read_text()
            try:
                planted = m.edit(original)
            except Stale as err:
                rows.append((m.name, m.path, "stale", str(err), 0.0))
                print(f"stale   {m.name}: {err}", flush=True)
                continue
            target.write_text(planted)
            try:
                code, output, seconds = run_pytest(root, m.tests)
            finally:
                target.write_text(original)
            result = {0: "MISSED", 1: "caught"}.get(code, f"error ({code})")
            last_line = output.strip().splitlines()[-1] if output.strip() else ""
            detail = first_failure(output) if code == 1 else last_line
            rows.append((m.name, m.path, result, detail, seconds))
            print(f"{result:7} {m.name} ({seconds:.0f} s)", flush=True)

    print()
    width = max(len(r[0]) for r in rows)
    print(f"| {'mutant':{width}} | result | caught by / detail |")
    print(f"|{'-' * (width + 2)}|--------|-------------------|")
    for name, _path, result, detail, _seconds in rows:
        print(f"| {name:{width}} | {result:6} | {detail} |")
    missed = [r for r in rows if r[2] != "caught"]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} planted bugs caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
