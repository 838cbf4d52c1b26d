"""Chapter 06 with an extra evaluation set, on smoke: the default run lists none (the profile's
`data.extra_eval_paths` is empty); a second run adds a tiny AIME-style file as a parameter."""

from pathlib import Path

import papermill
import pytest

from helpers.book import NOTEBOOK_DIR
from helpers.results import load_results, results_dir
from helpers.stats import exact_interval

PROFILE = "smoke"
AIME = Path(__file__).resolve().parents[1] / "fixtures" / "aime_sample.jsonl"


def test_06_without_and_with_an_extra_set(smoke_book, tmp_path):
    before = load_results(PROFILE, "06_evaluation")
    assert before["extra"] == {}  # smoke lists no extra set, and the chapter runs without one
    saved = results_dir(PROFILE) / "06_evaluation.json"
    original = saved.read_bytes()
    try:
        papermill.execute_notebook(
            str(NOTEBOOK_DIR / "06_evaluation.ipynb"),
            str(tmp_path / "06_evaluation.ipynb"),
            parameters={"PROFILE": PROFILE, "EXTRA_EVAL_PATH": str(AIME)},
            kernel_name="python3",
            cwd=str(NOTEBOOK_DIR),
            progress_bar=False,
        )
        after = load_results(PROFILE, "06_evaluation")
    finally:
        saved.write_bytes(original)  # the book's own run stays what later tests read
    assert list(after["extra"]) == ["aime_sample"]
    report = after["extra"]["aime_sample"]
    n = len(AIME.read_text().splitlines())
    assert set(report["accuracy"]) == set(before["evaluation"]["accuracy"])  # the base and every run
    assert report["interval"] == "exact" and report["path"] == str(AIME)
    for name, summary in report["summary"].items():
        assert summary["n"] == n
        assert report["ci"][name] == pytest.approx(list(exact_interval(summary["correct"], n)))
    assert all(0 <= p <= 1 for p in report["mcnemar_p"].values())
    assert after["evaluation"] == before["evaluation"]  # the held-out set is untouched
