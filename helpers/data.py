"""Problems from any source as {"id", "question", "solution", "answer"}, and the answer grader.

The grader (`extract_answer`, `is_correct`, ...; the reward of every method) lives in
helpers.grading and is re-exported here, where DESIGN.md's public API names it. This module
reads problems from generated splits, local jsonl files (GSM8K, DeepScaleR, AIME) or the hub."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from helpers.cache import REPO_ROOT
from helpers.grading import (  # noqa: F401 (re-exported: helpers.data is the grader's public home)
    ABS_TOL,
    REL_TOL,
    SYMBOLIC_MAX_CHARS,
    SYMBOLIC_TIMEOUT_S,
    _boxed,
    _to_number,
    _unwrap,
    extract_answer,
    final_answer_text,
    graded_answer,
    is_correct,
    normalize_answer,
)
from helpers.problems import generate_problems

GSM8K_DIR = REPO_ROOT.parent / "shared" / "data" / "gsm8k"  # the local copy beside the repository
GSM8K_DIR_ENV = "WSG_GSM8K_DIR"  # a local copy elsewhere ({train,test}.jsonl)
QUESTION_KEYS = ("question", "problem", "prompt")
ANSWER_KEYS = ("answer", "final_answer", "solution")


class DataError(ValueError):
    """A data set that cannot be read; the message names the file, line and field."""


def _first_key(row: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if row.get(k) not in (None, "")), None)


def _bare_answer(raw: str) -> str | None:
    """A bare gold answer: a plain number normalised ("1,234" -> "1234"); anything else (LaTeX,
    a percentage) as written, since spaces and `\\%` matter to the expression math-verify reads."""
    boxed = _boxed(raw)
    raw = boxed if boxed is not None else raw
    bare = normalize_answer(raw)
    if bare is None or (_to_number(bare) is not None and "%" not in raw):
        return bare
    return _unwrap(raw)


def _normalise_row(row: Any, where: str, index: int, prefix: str) -> dict[str, str]:
    """One raw record as {"id", "question", "solution", "answer"}; `where` names file and line."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    q_key = _first_key(row, QUESTION_KEYS)
    if q_key is None:
        raise DataError(f"{where}: missing field `question` (or one of {', '.join(QUESTION_KEYS)})")
    a_key = _first_key(row, ANSWER_KEYS)
    if a_key is None:
        raise DataError(f"{where}: missing field `answer` (or one of {', '.join(ANSWER_KEYS)})")
    raw = str(row[a_key])
    # GSM8K's `answer` is a whole solution; DeepScaleR's and final_answer are bare answers.
    looks_like_solution = a_key == "solution" or "####" in raw or "\n" in raw.strip()
    answer = extract_answer(raw) if looks_like_solution else _bare_answer(raw)
    if answer is None:
        raise DataError(f"{where}: field `{a_key}` has no final answer: {raw[:80]!r}")
    solution = row.get("solution") or (raw if looks_like_solution else "")
    ident = row.get("id", row.get("unique_id"))
    return {
        "id": str(ident) if ident not in (None, "") else f"{prefix}-{index:05d}",
        "question": str(row[q_key]).strip(),
        "solution": str(solution).strip(),
        "answer": answer,
    }


def read_jsonl(path: str | Path, prefix: str | None = None) -> list[dict[str, str]]:
    """Read and normalise a jsonl file of problems; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    prefix = prefix or path.stem
    problems = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            problems.append(_normalise_row(row, where, len(problems), prefix))
    if not problems:
        raise DataError(f"data file {path} is empty: no problems in it")
    return problems


def gsm8k_file(split: str) -> Path:
    """Where the local GSM8K copy of `split` is looked for: $WSG_GSM8K_DIR, else beside the repository."""
    folder = os.environ.get(GSM8K_DIR_ENV)
    return (Path(folder) if folder else GSM8K_DIR) / f"{split}.jsonl"


def _load_hub(dataset_id: str, split: str, config: str | None = None) -> list[dict[str, str]]:
    """A hub dataset (needs network or a local HF cache) normalised like a jsonl file."""
    import datasets

    try:
        table = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as err:  # the hub raises many types; one clear message for all
        raise DataError(f"could not load hub dataset {dataset_id!r} split {split!r}: {err}") from err
    prefix = f"{dataset_id.split('/')[-1]}-{split}"
    problems = [
        _normalise_row(row, f"{dataset_id}[{split}] row {i}", i, prefix) for i, row in enumerate(table)
    ]
    if not problems:
        raise DataError(f"hub dataset {dataset_id!r} split {split!r} is empty")
    return problems


def load_problems(
    source: str,
    split: str,
    n: int | None = None,
    path: str | None = None,
    seed: int = 0,
    min_steps: int = 2,
    max_steps: int = 4,
    max_result: int = 999,
) -> list[dict[str, str]]:
    """Problems of `split` from `source`, each {"id", "question", "solution", "answer"}.

    source: "generated" (helpers.problems, seeded by `seed`); "gsm8k" (`path`, else
    the shared local copy, else the hub's openai/gsm8k); a path to a .jsonl; or any
    other hub dataset id. `n` keeps the first n problems in file order (not a random
    subset), so a larger n extends a smaller one; None keeps all.
    """
    if n is not None and n < 0:
        raise DataError(f"load_problems: n must be non-negative, got {n}")
    if source == "generated":
        if n is None:
            raise DataError("load_problems: source 'generated' needs n (how many problems to generate)")
        return generate_problems(n, seed, split, min_steps, max_steps, max_result)
    if path is not None:
        problems = read_jsonl(path, prefix=f"gsm8k-{split}" if source == "gsm8k" else None)
    elif source == "gsm8k":
        local = gsm8k_file(split)
        if local.is_file():
            problems = read_jsonl(local, prefix=f"gsm8k-{split}")
        elif os.environ.get(GSM8K_DIR_ENV):
            raise DataError(f"${GSM8K_DIR_ENV}={local.parent}: no {local.name} there")
        else:
            try:
                problems = _load_hub("openai/gsm8k", split, "main")
            except DataError as err:
                raise DataError(
                    f"GSM8K {split}: no local copy at {local} and {err}; "
                    f"point ${GSM8K_DIR_ENV} at a folder with {{train,test}}.jsonl"
                ) from err
    elif source.endswith(".jsonl") or Path(source).is_file():
        problems = read_jsonl(source)
    else:
        problems = _load_hub(source, split)
    if n is not None:
        if n > len(problems):
            warnings.warn(f"{source}: asked for {n} problems, only {len(problems)} exist", stacklevel=2)
        problems = problems[:n]
    return problems
