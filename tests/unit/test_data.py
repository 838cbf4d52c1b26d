"""The answer grader (on real GSM8K and tricky strings) and the problem loader's errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.data import (
    GSM8K_DIR,
    DataError,
    extract_answer,
    final_answer_text,
    graded_answer,
    is_correct,
    load_problems,
    normalize_answer,
)
from helpers.problems import generate_problems

GSM8K_TEST = GSM8K_DIR / "test.jsonl"
DEEPSCALER = Path(__file__).resolve().parents[1] / "fixtures" / "deepscaler_sample.jsonl"
REPO = Path(__file__).resolve().parents[2]
needs_gsm8k = pytest.mark.skipif(not GSM8K_TEST.is_file(), reason=f"no local GSM8K at {GSM8K_TEST}")


@needs_gsm8k
def test_grader_on_every_gsm8k_test_solution():
    rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()]
    assert len(rows) == 1319
    for row in rows:
        solution = row["answer"]
        # Independent reference: the text after the last ####, commas dropped.
        want = solution.split("####")[-1].strip().replace(",", "")
        assert re.fullmatch(r"-?\d+", want), want
        assert extract_answer(solution) == want, solution
        assert is_correct(solution, want)
        assert is_correct(f"So the total is {want}.", solution)
        assert not is_correct(solution, str(int(want) + 1))


EXTRACT_CASES = [
    # (text, expected) -- every expected value written by hand
    ("#### 42", "42"),
    ("#### 1,234", "1234"),
    ("He makes 9 * 2 = $<<9*2=18>>18.\n#### 18", "18"),
    ("#### 5\nlater\n#### 7", "7"),  # the last ####
    ("The answer is 9.\n#### 5", "5"),  # #### beats the answer phrase and the last number
    ("#### 5 apples, not 9", "5"),  # the first number after the last ####
    ("#### 5\nThe total is 9", "5"),  # #### beats the last-number fallback
    ("so \\boxed{12}", "12"),
    ("\\boxed{3} then \\boxed{4}", "4"),
    ("\\boxed{\\boxed{5}}", "5"),
    ("\\boxed{\\frac{1}{2}}", "1/2"),
    ("\\boxed{x = 5}", "5"),
    ("\\boxed{5 \\text{ apples}}", "5"),
    ("\\boxed{50\\%}", "50"),
    ("\\boxed{\\$1,200}", "1200"),
    ("\\boxed{\\sqrt{2}}", "\\sqrt{2}"),  # non-numeric answers come back as cleaned text
    ("The answer is 7 but \\boxed{8}", "8"),  # boxed beats the answer phrase
    ("The answer is $1,234.00.", "1234"),
    ("The final answer is: -2.50", "-2.5"),
    ("answer: 42 apples and 3 pears", "42"),
    ("Answer = 17", "17"),
    ("The answer is 12, then she got 30 more", "12"),
    ("She has 3 * 4 = <<3*4=12>>12 apples", "12"),  # annotations never confuse it
    ("It costs <<5+5=10>>", None),  # an annotation alone is not an answer
    ("The growth is 50%.", "50"),
    ("It dropped to -5.", "-5"),
    ("x=-5", "-5"),
    ("$-3", "-3"),
    ("-$3", "-3"),
    ("10-3", "3"),  # a minus between numbers is subtraction, not a sign
    ("+7", "7"),
    ("Total: 18.", "18"),
    ("18.0", "18"),
    ("2.50", "2.5"),
    ("0.5", "0.5"),
    (".5", "0.5"),
    ("007", "7"),
    ("1,234,567 people", "1234567"),
    ("€12 or £5", "5"),
    ("She uses 3/4 cup", "3/4"),
    ("\\frac{3}{4}", "3/4"),
    ("There are 4 boxes and 6 cats", "6"),
    ("no number here", None),
    ("", None),
    ("####", None),
    ("−4", "-4"),  # unicode minus
]


@pytest.mark.parametrize(("text", "expected"), EXTRACT_CASES)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_enough_tricky_cases():
    assert len(EXTRACT_CASES) >= 30


CORRECT_CASES = [
    ("#### 12", "12", True),
    ("The answer is 12.0", "12", True),
    ("#### 12", "12.00", True),
    ("\\boxed{0.5}", "1/2", True),
    ("\\boxed{\\frac{1}{2}}", "0.5", True),
    ("#### 1,000", "1000", True),
    ("$18", "Janet makes 9 * 2 = $<<9*2=18>>18.\n#### 18", True),
    ("#### 1/3", "0.3333333", True),  # within 1e-6
    ("#### 12", "13", False),
    ("#### 12", "-12", False),
    ("#### 0.5", "0.6", False),
    ("#### 1000000", "1000001", False),  # relative tolerance stays far below 1
    ("no number", "12", False),
    ("#### 12", "", False),
    ("\\boxed{\\sqrt{2}}", "\\sqrt{2}", True),  # symbolic answers compare as expressions
    ("\\boxed{\\sqrt{3}}", "\\sqrt{2}", False),
    ("#### 5", "The answer is 5.", True),
    ("#### \\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{3}}{2}", True),  # issue 10: was False
    ("#### \\tfrac83", "8/3", True),  # a LaTeX answer to a number gets a second look
    ("\\boxed{\\tfrac12}", "0.5", True),
    ("\\boxed{\\tfrac13}", "0.5", False),
    ("\\boxed{0.1}", "10\\%", True),  # a percentage is not a plain number: math-verify decides
    ("\\boxed{1}", "10\\%", False),
    ("The answer is $\\sqrt{2}$.", "\\sqrt{2}", True),
    ("So $x = \\sqrt{2}$", "\\sqrt{2}", True),  # no marker: the last math span
    ("So x is root two", "\\sqrt{2}", False),
]


@pytest.mark.parametrize(("completion", "reference", "expected"), CORRECT_CASES)
def test_is_correct(completion, reference, expected):
    assert is_correct(completion, reference) is expected


FINAL_TEXT_CASES = [
    # (text, final answer as written) -- the priority of extract_answer, LaTeX kept
    ("so\n#### \\frac{\\sqrt{3}}{2}\nbye", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{(1, 2)} but #### 7", "7"),
    ("first \\boxed{1} then \\boxed{\\dfrac{\\sqrt3}{2}}.", "\\dfrac{\\sqrt3}{2}"),
    ("The answer is $[1, 2)$. Done.", "[1, 2)"),
    ("The answer is \\(3\\sqrt{2}\\).", "3\\sqrt{2}"),
    ("We get $x=1$, then $y = \\pi$ at last", "y = \\pi"),
    ("$$\\frac{1}{2}.$$", "\\frac{1}{2}"),
    ("#### \n\\boxed{5}", "5"),  # an empty #### line gives way to the box
    ("no answer here", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), FINAL_TEXT_CASES)
def test_final_answer_text(text, expected):
    assert final_answer_text(text) == expected


def _deepscaler_rows() -> list[dict]:
    return [json.loads(line) for line in DEEPSCALER.read_text().splitlines() if line.strip()]


def test_deepscaler_fixture_covers_the_hard_cases():
    """The fixture holds what the grader must tell apart, so the grading test below means something."""
    rows = _deepscaler_rows()
    golds = " ".join(r["answer"] for r in rows)
    for needle in ("\\frac", "\\sqrt", "\\tfrac", "\\dfrac", "\\%", "\\text", "\\infty", "(1, 2)", "\\pi"):
        assert needle in golds, needle
    assert all(any(c["correct"] for c in r["completions"]) for r in rows)
    assert all(not all(c["correct"] for c in r["completions"]) for r in rows)


def test_deepscaler_answers_graded_by_equivalence():
    """Every labelled completion of the DeepScaleR-format fixture: right ones right, wrong ones
    wrong (wrong answers share digits with the gold: sqrt(3)/3 for sqrt(3)/2, 2sqrt3 for 3sqrt2)."""
    rows = _deepscaler_rows()
    problems = load_problems(str(DEEPSCALER), "train")
    assert [p["question"] for p in problems] == [r["problem"] for r in rows]
    assert problems[0]["answer"] == "\\frac{\\sqrt{3}}{2}" and problems[2]["answer"] == "(1, 2)"
    assert problems[4]["answer"] == "10\\%"  # kept as written: 10% may be 0.1, never just "10"
    for row, problem in zip(rows, problems, strict=True):
        assert problem["solution"] == row["solution"]
        assert is_correct(row["solution"], problem["answer"]), row["solution"]
        assert is_correct(row["solution"], row["answer"])  # the raw gold grades the same
        for c in row["completions"]:
            assert is_correct(c["text"], problem["answer"]) is c["correct"], (c["text"], problem["answer"])


def test_graded_answer_is_what_is_compared():
    assert graded_answer("#### 1,234 apples", "1234") == "1234"
    assert graded_answer("so \\boxed{\\dfrac{\\sqrt3}{2}}", "\\frac{\\sqrt{3}}{2}") == "\\dfrac{\\sqrt3}{2}"
    assert graded_answer("#### \\tfrac83", "8/3") == "\\tfrac83"
    assert graded_answer("nothing", "5") is None


def _python(code: str, timeout: float = 120) -> str:
    """Run code in a fresh interpreter (so sys.modules and signal state are its own)."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=True
    )
    return done.stdout.strip()


def test_math_verify_is_imported_lazily_and_not_for_numbers():
    out = _python(
        "import sys, helpers.data as d\n"
        "print('math_verify' in sys.modules)\n"
        "assert d.is_correct('#### 1,234', '1234') and not d.is_correct('#### 12', '13')\n"
        "assert d.is_correct('\\\\boxed{18}', 'Janet makes 9 * 2 = $18.\\n#### 18')\n"
        "print('math_verify' in sys.modules)\n"
        "assert d.is_correct('\\\\boxed{\\\\dfrac{\\\\sqrt3}{2}}', '\\\\frac{\\\\sqrt{3}}{2}')\n"
        "print('math_verify' in sys.modules)"
    )
    assert out.split() == ["False", "False", "True"]


def test_an_adversarial_answer_cannot_stall_grading():
    """`9^{9^{9^9}}` makes sympy run for ever; math-verify's time limit turns it into a wrong answer."""
    out = _python(
        "import time, helpers.data as d, helpers.grading as g\n"
        "g.SYMBOLIC_TIMEOUT_S = 1\n"
        "start = time.perf_counter()\n"
        "print(d.is_correct('x = \\\\boxed{9^{9^{9^{9}}}}', '\\\\frac{\\\\sqrt{3}}{2}'))\n"
        "print(time.perf_counter() - start)",
        timeout=60,
    )
    verdict, seconds = out.split()
    assert verdict == "False" and float(seconds) < 30


def test_off_the_main_thread_symbolic_answers_compare_as_text():
    """math-verify's SIGALRM limit cannot be set off the main thread; grading there must not raise or hang."""
    with ThreadPoolExecutor(1) as pool, pytest.warns(RuntimeWarning, match="main thread"):
        same = pool.submit(is_correct, "\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}").result()
        other = pool.submit(is_correct, "\\boxed{\\dfrac{\\sqrt3}{2}}", "\\frac{\\sqrt{3}}{2}").result()
        number = pool.submit(is_correct, "#### 12", "12").result()
    assert same and not other and number


def test_normalize_answer():
    assert normalize_answer("$1,234.50") == "1234.5"
    assert normalize_answer("\\frac{1}{2}") == "1/2"
    assert normalize_answer("\\frac{\\sqrt{3}}{2}") == "\\frac{\\sqrt{3}}{2}"
    assert normalize_answer("  ") is None


# --- the loader ---------------------------------------------------------------------------


@needs_gsm8k
def test_load_gsm8k_local():
    problems = load_problems("gsm8k", "test")
    assert len(problems) == 1319
    first = problems[0]
    assert first["id"] == "gsm8k-test-00000" and first["answer"] == "18"
    assert first["question"].startswith("Janet")
    assert first["solution"].endswith("#### 18")
    assert load_problems("gsm8k", "test", n=5) == problems[:5]  # first n, in file order
    assert load_problems("gsm8k", "test", path=str(GSM8K_TEST), n=3) == problems[:3]


def test_load_generated_matches_generator():
    assert load_problems("generated", "test", n=20, seed=5) == generate_problems(20, 5, "test")
    with pytest.raises(DataError, match="needs n"):
        load_problems("generated", "train")


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_load_jsonl_with_aliases(tmp_path):
    path = _write(
        tmp_path / "mixed.jsonl",
        [
            json.dumps({"problem": "What is 2+3?", "solution": "2+3=5\n#### 5"}),
            "",  # blank lines are skipped
            json.dumps({"prompt": "Half of 3?", "final_answer": "\\frac{3}{2}"}),
            json.dumps({"question": "Big?", "answer": "1,234"}),
            json.dumps(
                {
                    "id": "own-id",
                    "problem": "Root?",
                    "answer": "\\sqrt{2}",
                    "solution": "It is \\boxed{\\sqrt{2}}",
                }
            ),
        ],
    )
    problems = load_problems(path, "train")
    assert [p["answer"] for p in problems] == ["5", "3/2", "1234", "\\sqrt{2}"]
    assert [p["id"] for p in problems] == ["mixed-00000", "mixed-00001", "mixed-00002", "own-id"]
    assert problems[0]["question"] == "What is 2+3?" and problems[0]["solution"] == "2+3=5\n#### 5"
    assert problems[1]["solution"] == ""
    assert problems[3]["solution"] == "It is \\boxed{\\sqrt{2}}"
    assert is_correct("so 1.5", problems[1]["answer"])
    assert len(load_problems("anything", "train", path=path, n=2)) == 2


@pytest.mark.parametrize(
    ("lines", "pattern"),
    [
        (['{"question": "a", "answer": "1"}', "{not json"], r"bad\.jsonl, line 2: not valid JSON"),
        (
            ['{"question": "a", "answer": "1"}', '{"answer": "1"}'],
            r"bad\.jsonl, line 2: missing field `question`",
        ),
        (['{"question": "a"}'], r"bad\.jsonl, line 1: missing field `answer`"),
        (['{"question": "a", "answer": ""}'], r"bad\.jsonl, line 1: missing field `answer`"),
        (
            ['{"question": "a", "answer": "no number\\nat all"}'],
            r"bad\.jsonl, line 1: field `answer` has no final",
        ),
        (["[1, 2]"], r"bad\.jsonl, line 1: expected a JSON object"),
        (["", "  "], r"bad\.jsonl is empty"),
    ],
)
def test_bad_jsonl_raises_data_error(tmp_path, lines, pattern):
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=pattern):
        load_problems(path, "train")
    assert issubclass(DataError, ValueError)


def test_missing_file_raises_data_error(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=r"nope\.jsonl does not exist"):
        load_problems(str(missing), "train")
    with pytest.raises(DataError, match=r"nope\.jsonl does not exist"):
        load_problems("gsm8k", "test", path=str(missing))


def test_hub_dataset_columns(monkeypatch):
    """DeepScaleR's problem/solution/answer columns, with the hub call replaced by a table."""
    import datasets

    rows = [
        {"problem": "Find x.", "solution": "So \\boxed{\\frac{1}{2}}.", "answer": "\\frac{1}{2}"},
        {"problem": "Count.", "solution": "Thus 12.", "answer": "12"},
    ]
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kw: calls.append((args, kw)) or rows)
    with pytest.warns(UserWarning, match="asked for 5 problems, only 2"):
        problems = load_problems("agentica-org/DeepScaleR-Preview-Dataset", "train", n=5)
    assert calls[0][0][0] == "agentica-org/DeepScaleR-Preview-Dataset" and calls[0][1]["split"] == "train"
    assert [p["answer"] for p in problems] == ["1/2", "12"]
    assert problems[0]["id"] == "DeepScaleR-Preview-Dataset-train-00000"
    assert problems[1]["solution"] == "Thus 12." and problems[1]["question"] == "Count."


def test_hub_dataset_offline_raises_data_error():
    # tests/conftest.py sets HF_HUB_OFFLINE=1, so the hub cannot be reached.
    with pytest.raises(DataError, match="no-such-user/no-such-dataset"):
        load_problems("no-such-user/no-such-dataset", "train")


def test_gsm8k_copy_named_by_the_environment(tmp_path, monkeypatch):
    from helpers import data
    from helpers.data_keys import source_file

    row = {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"}
    (tmp_path / "test.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setenv(data.GSM8K_DIR_ENV, str(tmp_path))
    [problem] = load_problems("gsm8k", "test")
    assert problem["id"] == "gsm8k-test-00000" and problem["answer"] == "7"
    assert source_file("gsm8k", "test") == tmp_path / "test.jsonl"  # the cache key hashes this file
    with pytest.raises(DataError, match=r"\$WSG_GSM8K_DIR=.*no train.jsonl"):
        load_problems("gsm8k", "train")
    monkeypatch.delenv(data.GSM8K_DIR_ENV)
    monkeypatch.setattr(data, "GSM8K_DIR", tmp_path / "nowhere")  # no copy beside the repo, hub offline
    with pytest.raises(DataError, match=r"no local copy at .*nowhere.*WSG_GSM8K_DIR"):
        load_problems("gsm8k", "test")
