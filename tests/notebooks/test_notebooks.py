"""Every notebook: committed thin and without outputs, and runs headless on the smoke profile.

The run tests execute the chapters in order (later chapters reuse the cached stages of
earlier ones) and assert on the JSON numbers each chapter writes, never on rendered output.
"""

import ast
from pathlib import Path

import nbformat
import papermill
import pytest

from helpers.book import notebooks
from helpers.results import load_results

NOTEBOOKS = notebooks()
PROFILE = "smoke"


def test_there_are_chapters_in_order():
    names = [p.stem for p in NOTEBOOKS]
    assert names[:2] == ["00_problems", "01_base_model_and_rollouts"]
    assert names == sorted(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_thin_and_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "clear outputs before committing"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "an H1 title comes first"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged `parameters`"
    assigned = ast.parse(params[0].source).body
    assert all(isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant) for s in assigned)
    names = [t.id for s in assigned for t in s.targets]
    assert "PROFILE" in names and all(n.isupper() for n in names)
    headers = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
    assert headers[0].startswith("## 1.") and headers[-1].startswith("## Summary")


def _run(name: str, tmp_path: Path) -> dict:
    src = next(p for p in NOTEBOOKS if p.stem == name)
    papermill.execute_notebook(
        str(src),
        str(tmp_path / src.name),
        parameters={"PROFILE": PROFILE},
        kernel_name="python3",
        cwd=str(src.parent),
        progress_bar=False,
    )
    return load_results(PROFILE, name)


@pytest.mark.slow
def test_00_problems(tmp_path):
    out = _run("00_problems", tmp_path)
    assert out["n_train"] == 24 and out["n_eval"] == 16 and out["train_eval_overlap"] == 0
    assert out["gsm8k_test_n"] == 1319 and out["gsm8k_checker_agreement"] == 1.0
    assert set(out["steps_histogram"]) <= {"2", "3", "4"}


@pytest.mark.slow
def test_01_base_model_and_rollouts(tmp_path):
    out = _run("01_base_model_and_rollouts", tmp_path)
    r = out["rollouts"]
    assert r["n_rollouts"] == 24 * 4 and r["n_prompts"] == 24
    assert 0 < r["reward_mean"] < 1 and r["mixed_groups"] > 0 and r["dpo_pairs"] > 0
    assert out["student_parameters"] > 0 and "student" in out["pretrain"]
