"""The answer grader, the reward of every method (a rollout is correct or not).

It is strict about where the final answer sits and lenient about how it is written:
`#### N` wins over `\\boxed{N}`, over "The answer is N", over the last number in
the text; commas, currency, percent signs, units and trailing zeros are ignored.
A reference that is a plain number (every GSM8K label) is compared as a number here;
any other reference (DeepScaleR's `\\frac{\\sqrt{3}}{2}`, `(1, 2)`, `10\\%`, intervals)
is compared as a whole expression by HuggingFace's math-verify, imported on first use.
Split from helpers.data (which reads the problems), which re-exports these names.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import warnings
from fractions import Fraction

ABS_TOL = 1e-6  # small answers: 0.333333 == 1/3
REL_TOL = 1e-9  # large answers: float noise only, so 1000000 != 1000001
# math-verify's limit on one parse and on one comparison, in whole seconds (it uses signal.alarm),
# so an adversarial answer (`9^{9^{9^9}}`) costs a few seconds, never a stalled run.
SYMBOLIC_TIMEOUT_S = 2
SYMBOLIC_MAX_CHARS = 400  # a longer "final answer" is not an answer; never handed to sympy


_INT = r"(?:\d{1,3}(?:,\d{3})+(?![\d,]\d)|\d+)"
# A sign counts only when glued to the number and not after a word or bracket (so "10-3" is 3).
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}.])(?P<sign>[-+]))?(?:[$€£]\s?(?P<sign2>-)?)?"
    rf"(?P<body>{_INT}(?:\.\d+)?|\.\d+)(?![\d.]\d)"
    r"(?:\s*/\s*(?P<den>\d+)(?![\d.]\d))?"
)
_ANNOTATION = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations <<3*4=12>>
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is|:|=)\s*:?\s*\$?\s*", re.IGNORECASE)
_LATEX_NOISE = re.compile(r"\\[,;!:]|\\(?:left|right|displaystyle)|\\?%|\^\s*\{?\\circ\}?|\\\$")


def _clean(text: str) -> str:
    """Remove annotations and LaTeX decoration that never carries the value."""
    text = _ANNOTATION.sub("", text).replace("\u2212", "-")
    text = _FRAC.sub(r"\1/\2", text)
    text = re.sub(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}", r"\1", text)
    return _LATEX_NOISE.sub("", text)


def _format(match: re.Match[str]) -> str:
    """The normalised string of one matched number: no commas, signs or trailing zeros."""
    negative = match.group("sign") == "-" or match.group("sign2") == "-"
    body = match.group("body").replace(",", "")
    integer, _, decimals = body.partition(".")
    integer = integer.lstrip("0") or "0"
    decimals = decimals.rstrip("0")
    value = f"{integer}.{decimals}" if decimals else integer
    if match.group("den") is not None:
        value = f"{value}/{match.group('den')}"
    if negative and value.strip("0./") != "":
        value = "-" + value
    return value


def _first_number(text: str) -> str | None:
    match = _NUMBER.search(text)
    return _format(match) if match else None


def _last_number(text: str) -> str | None:
    matches = list(_NUMBER.finditer(text))
    return _format(matches[-1]) if matches else None


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (nested braces allowed), or None."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i : j - 1] if depth == 0 else None


_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$([^$]+)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)


def _unwrap(text: str) -> str | None:
    """An answer without the math delimiters and the full stop around it; None when empty."""
    text = text.strip().rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right) and len(text) > len(left) + len(right):
            text = text[len(left) : -len(right)].strip().rstrip(".").strip()
    return text.strip("$").strip() or None


def final_answer_text(text: str) -> str | None:
    """The final answer as written, LaTeX kept ("\\frac{\\sqrt{3}}{2}", "(1, 2)"), or None.

    Same priority as `extract_answer`: the rest of the last `####` line, the last
    `\\boxed{...}`, what follows the last "The answer is" on its line (up to a full stop),
    then the last math span (`$...$`, `\\(...\\)`, `\\[...\\]`). What `is_correct` compares
    whole when the reference is not a plain number.
    """
    if not text:
        return None
    hashes = text.rfind("####")
    if hashes >= 0:
        found = _unwrap(text[hashes + 4 :].split("\n", 1)[0])
        if found is not None:
            return found
    boxed = _boxed(text)
    if boxed is not None and _unwrap(boxed) is not None:
        return _unwrap(boxed)
    phrases = list(_ANSWER_PHRASE.finditer(text))
    if phrases:
        rest = text[phrases[-1].end() :].split("\n", 1)[0]
        found = _unwrap(re.split(r"\.\s", rest, maxsplit=1)[0])
        if found is not None:
            return found
    spans = list(_MATH_SPAN.finditer(text))
    if spans:
        return _unwrap(next(g for g in spans[-1].groups() if g is not None))
    return None


def normalize_answer(text: str) -> str | None:
    """A bare final answer ("1,234", "$5.00", "\\frac{1}{2}", "\\sqrt{2}") as a normalised string.

    A number (optionally with a variable `x =` before it or unit words after it)
    becomes its normalised form; anything else is returned cleaned and stripped.
    """
    cleaned = _clean(text).strip().strip("$").strip()
    cleaned = re.sub(r"^[A-Za-z]\s*=\s*", "", cleaned).rstrip(".").strip()
    if not cleaned:
        return None
    match = _NUMBER.match(cleaned)
    if match and re.fullmatch(r"[\s%]*(?:[A-Za-z]+\.?\s*)*", cleaned[match.end() :]):
        return _format(match)
    return re.sub(r"\s+", "", cleaned)


def extract_answer(text: str) -> str | None:
    """The final answer in a solution or completion, normalised ("1234", "-5", "2.5", "1/2").

    Priority: the last `#### N`, the last `\\boxed{...}`, the last "The answer is N" /
    "answer: N", then the last number in the text; None when there is no number.
    """
    if not text:
        return None
    hashes = text.rfind("####")
    if hashes >= 0:
        found = _first_number(_clean(text[hashes + 4 :]))
        if found is not None:
            return found
    boxed = _boxed(text)
    if boxed is not None:
        found = normalize_answer(boxed)
        if found is not None:
            return found
    cleaned = _clean(text)
    phrases = list(_ANSWER_PHRASE.finditer(cleaned))
    if phrases:
        match = _NUMBER.match(cleaned, phrases[-1].end())
        if match:
            return _format(match)
    return _last_number(cleaned)


def _to_number(answer: str) -> Fraction | None:
    """Exact value of a normalised numeric answer, or None for a non-numeric one."""
    try:
        return Fraction(answer)
    except (ValueError, ZeroDivisionError):
        return None


def _reference_answer(reference: str) -> str | None:
    """A reference is either a bare answer or a full solution; normalise either."""
    if _is_solution(reference):
        return extract_answer(reference)
    bare = normalize_answer(reference)
    # A sentence ("The answer is 5.") is a solution, not a bare symbolic answer.
    if bare is not None and _to_number(bare) is None and re.search(r"(?<![\\A-Za-z])[A-Za-z]{2,}", bare):
        return extract_answer(reference)
    return bare


def _is_solution(reference: str) -> bool:
    return "####" in reference or "\\boxed" in reference or "\n" in reference.strip()


def _reference_text(reference: str) -> str | None:
    """The reference's final answer as written: from a solution or sentence, else the bare answer."""
    if _is_solution(reference) or _ANSWER_PHRASE.search(reference):
        found = final_answer_text(reference)
        if found is not None:
            return found
    return _unwrap(reference)


def _plain_number(reference: str) -> Fraction | None:
    """The value of a reference that is a plain number (a percentage is not: 10% may be 0.1)."""
    want = _reference_answer(reference)
    value = _to_number(want) if want is not None else None
    if value is None or "%" in (_reference_text(reference) or ""):
        return None
    return value


def graded_answer(completion: str, reference: str) -> str | None:
    """The answer of `completion` that `is_correct` compares with `reference` (for tables)."""
    text = final_answer_text(completion)
    if _plain_number(str(reference)) is not None:
        got = extract_answer(completion)
        if got is None or (_to_number(got) is not None and "\\" not in (text or "")):
            return got
    return text


def is_correct(completion: str, reference: str) -> bool:
    """Whether the completion's final answer equals the reference's.

    A plain-number reference: numbers compare exactly as fractions, else within 1e-6
    absolute or 1e-9 relative (float noise only: 1000000 and 1000001 differ), without
    sympy. Any other reference, or a non-numeric final answer (`\\tfrac12`) to a number,
    is compared as a whole expression by math-verify (`\\frac{\\sqrt{3}}{2}` equals
    `\\dfrac{\\sqrt3}{2}`, not `\\frac{\\sqrt{3}}{3}`).
    """
    reference = str(reference)
    want = _plain_number(reference)
    if want is not None:
        got = extract_answer(completion)
        if got is None:
            return False
        value = _to_number(got)
        if value is not None:
            if value == want or math.isclose(float(value), float(want), rel_tol=REL_TOL, abs_tol=ABS_TOL):
                return True
            # "#### \\tfrac83" reads as 83 above; only an answer written in LaTeX gets a second look.
            if "\\" not in (final_answer_text(completion) or ""):
                return False
    return _equivalent(_reference_text(reference), final_answer_text(completion))


def _equivalent(gold: str | None, answer: str | None) -> bool:
    """Whether two answers as written are the same expression (math-verify, time-limited)."""
    if gold is None or answer is None:
        return False
    if re.sub(r"\s+", "", gold) == re.sub(r"\s+", "", answer):
        return True
    if len(gold) > SYMBOLIC_MAX_CHARS or len(answer) > SYMBOLIC_MAX_CHARS:
        return False
    if threading.current_thread() is not threading.main_thread():
        # math-verify's time limit is a SIGALRM, which only the main thread may set; without it
        # one answer (`9^{9^{9^9}}`) can hang, so off the main thread answers compare as text.
        warnings.warn(
            "is_correct off the main thread compares symbolic answers as text only "
            "(math-verify's time limit needs the main thread)",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return _verify(gold, answer)


@functools.lru_cache(maxsize=65536)
def _verify(gold: str, answer: str) -> bool:
    """math-verify's verdict on one (gold, answer) pair. Cached: the K rollouts of a prompt
    often end on the same answer."""
    from math_verify import verify

    parsed_gold, parsed = _parse_latex(gold), _parse_latex(answer)
    if not parsed_gold or not parsed:
        return False
    return bool(verify(list(parsed_gold), list(parsed), timeout_seconds=SYMBOLIC_TIMEOUT_S))


@functools.lru_cache(maxsize=8192)
def _parse_latex(text: str) -> tuple:
    """math-verify's parse of one answer written as LaTeX (or plain: `1/2`); () when it fails."""
    from math_verify import parse

    return tuple(parse(f"${text}$", parsing_timeout=SYMBOLIC_TIMEOUT_S))


# --- loading -----------------------------------------------------------------------------
