"""Procedural multi-step arithmetic word problems with GSM8K-style worked solutions.

The tiny CPU models are pretrained on these, so they are kept learnable: a few
names, items and verbs, operands mostly 2-20, results below 1000 and never
negative, exact integer division only. Every step acts on the running quantity,
so a problem of k steps needs k chained computations, each restated in the
solution as `a op b = c`, and the last line is `#### <answer>` as in GSM8K.
Each solution line is written in one of several styles (the scenario's own sentence, a
short equation with a lead word, the equation then the new state), drawn per line, so a
problem has many valid worked solutions and a teacher that learned them samples
different chains of thought for one prompt, as the study's teacher does.
Train and test are disjoint by construction: a question's split is a hash of its
text, and each split keeps only its own questions.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from helpers.prompting import build_completion, build_prompt

SPLITS = ("train", "test")
TEST_SHARE = 5  # one question in TEST_SHARE hashes to the test split
MAX_RESULT = 999
OPS = ("+", "-", "*", "/")
OP_WEIGHTS = (4, 3, 2, 2)
# Lead words of the short solution style: for the first line, and for the later ones.
LEADS = (("First,", "At the start,"), ("Then", "Next,", "Now", "After that,"))
NAMES = (("Mia", "she"), ("Tom", "he"), ("Sara", "she"), ("Ben", "he"), ("Lily", "she"), ("Sam", "he"))


@dataclass(frozen=True)
class Template:
    """One scenario: how the quantity starts, how each operation changes it, the question.

    Question and solution strings are formatted with name, pron (she/he), Pron,
    item, a and b (the starting operands), x (the quantity before a step), n (the
    step's operand) and y (the quantity after it). `state` says what the quantity v
    is, for the solution style that writes the equation first.
    """

    name: str
    items: tuple[str, ...]
    start: dict[str, tuple[str, str]]  # op -> (question sentence, solution line)
    steps: dict[str, tuple[str, str]]  # op -> (question sentence, solution line)
    ask: str
    state: str = "{pron} has {v} {item}"


TEMPLATES: tuple[Template, ...] = (
    Template(
        name="shopping",
        items=("apples", "pears", "pens", "stickers"),
        start={
            "*": (
                "{name} buys {a} bags of {item}. Each bag has {b} {item}.",
                "{Pron} buys {a} * {b} = {x} {item}.",
            ),
            "+": ("{name} has {a} {item} and buys {b} more.", "{Pron} has {a} + {b} = {x} {item}."),
        },
        steps={
            "+": (
                "Then {pron} buys {n} more {item}.",
                "{Pron} buys {n} more, so {pron} has {x} + {n} = {y} {item}.",
            ),
            "-": (
                "{Pron} gives {n} {item} to a friend.",
                "{Pron} gives away {n}, so {pron} has {x} - {n} = {y} {item}.",
            ),
            "*": (
                "Then {pron} buys until {pron} has {n} times as many {item}.",
                "{Pron} now has {x} * {n} = {y} {item}.",
            ),
            "/": (
                "{Pron} puts the {item} into {n} equal bags and keeps one bag.",
                "One bag has {x} / {n} = {y} {item}.",
            ),
        },
        ask="How many {item} does {name} have now?",
    ),
    Template(
        name="sharing",
        items=("candies", "marbles", "cards", "shells"),
        start={
            "*": (
                "{name} has {a} boxes of {item} with {b} {item} in each box.",
                "{Pron} has {a} * {b} = {x} {item}.",
            ),
            "+": ("{name} has {a} {item} and a friend gives {b} more.", "{Pron} has {a} + {b} = {x} {item}."),
        },
        steps={
            "+": (
                "{Pron} finds {n} more {item}.",
                "{Pron} finds {n} more, so {pron} has {x} + {n} = {y} {item}.",
            ),
            "-": (
                "{Pron} gives {n} {item} to a friend.",
                "{Pron} gives away {n}, so {pron} has {x} - {n} = {y} {item}.",
            ),
            "*": (
                "{Pron} wins a game and now has {n} times as many {item}.",
                "{Pron} now has {x} * {n} = {y} {item}.",
            ),
            "/": (
                "{Pron} shares the {item} equally among {n} kids and keeps one share.",
                "Each share is {x} / {n} = {y} {item}.",
            ),
        },
        ask="How many {item} does {name} have at the end?",
    ),
    Template(
        name="savings",
        items=("dollars",),
        start={
            "*": (
                "{name} saves {a} dollars every week for {b} weeks.",
                "{Pron} saves {a} * {b} = {x} dollars.",
            ),
            "+": (
                "{name} has {a} dollars and earns {b} dollars more.",
                "{Pron} has {a} + {b} = {x} dollars.",
            ),
        },
        steps={
            "+": (
                "{Pron} earns {n} dollars for chores.",
                "{Pron} earns {n}, so {pron} has {x} + {n} = {y} dollars.",
            ),
            "-": (
                "{Pron} spends {n} dollars on a book.",
                "{Pron} spends {n}, so {pron} has {x} - {n} = {y} dollars.",
            ),
            "*": (
                "A prize makes the money {n} times as much.",
                "The money grows to {x} * {n} = {y} dollars.",
            ),
            "/": (
                "{Pron} splits the money equally into {n} jars and keeps one jar.",
                "One jar has {x} / {n} = {y} dollars.",
            ),
        },
        ask="How many dollars does {name} have now?",
    ),
    Template(
        name="farm",
        items=("chickens", "goats", "ducks", "sheep"),
        start={
            "*": (
                "{name} has a farm with {a} pens and {b} {item} in each pen.",
                "{Pron} has {a} * {b} = {x} {item}.",
            ),
            "+": ("{name} has {a} {item} on a farm and buys {b} more.", "{Pron} has {a} + {b} = {x} {item}."),
        },
        steps={
            "+": (
                "{Pron} buys {n} more {item}.",
                "{Pron} buys {n} more, so {pron} has {x} + {n} = {y} {item}.",
            ),
            "-": ("{Pron} sells {n} {item}.", "{Pron} sells {n}, so {pron} has {x} - {n} = {y} {item}."),
            "*": (
                "In a year the number of {item} grows {n} times.",
                "{Pron} now has {x} * {n} = {y} {item}.",
            ),
            "/": (
                "{Pron} splits the {item} into {n} equal groups and keeps one group.",
                "One group has {x} / {n} = {y} {item}.",
            ),
        },
        ask="How many {item} does {name} have now?",
    ),
    Template(
        name="travel",
        items=("km",),
        start={
            "*": (
                "{name} drives {a} km every hour for {b} hours.",
                "{Pron} drives {a} * {b} = {x} km from home.",
            ),
            "+": (
                "{name} walks {a} km from home and then {b} km more.",
                "{Pron} walks {a} + {b} = {x} km from home.",
            ),
        },
        steps={
            "+": (
                "Then {pron} goes {n} km farther.",
                "{Pron} goes {n} more, so {pron} is {x} + {n} = {y} km from home.",
            ),
            "-": (
                "{Pron} turns back and goes {n} km toward home.",
                "{Pron} goes back {n}, so {pron} is {x} - {n} = {y} km from home.",
            ),
            "*": (
                "{Pron} goes on until {pron} is {n} times as far from home.",
                "{Pron} is {x} * {n} = {y} km from home.",
            ),
            "/": (
                "{Pron} drives back until the distance is cut by {n} times.",
                "{Pron} is {x} / {n} = {y} km from home.",
            ),
        },
        ask="How many km from home is {name} now?",
        state="{pron} is {v} km from home",
    ),
    Template(
        name="baking",
        items=("cookies", "muffins", "cupcakes", "rolls"),
        start={
            "*": (
                "{name} bakes {a} trays of {item} with {b} {item} on each tray.",
                "{Pron} bakes {a} * {b} = {x} {item}.",
            ),
            "+": (
                "{name} bakes {a} {item} in the morning and {b} {item} at night.",
                "{Pron} bakes {a} + {b} = {x} {item}.",
            ),
        },
        steps={
            "+": (
                "{Pron} bakes {n} more {item}.",
                "{Pron} bakes {n} more, so {pron} has {x} + {n} = {y} {item}.",
            ),
            "-": ("{Pron} eats {n} {item}.", "{Pron} eats {n}, so {pron} has {x} - {n} = {y} {item}."),
            "*": (
                "{Pron} bakes again until {pron} has {n} times as many {item}.",
                "{Pron} now has {x} * {n} = {y} {item}.",
            ),
            "/": (
                "{Pron} packs the {item} equally into {n} boxes and keeps one box.",
                "One box has {x} / {n} = {y} {item}.",
            ),
        },
        ask="How many {item} does {name} have now?",
    ),
    Template(
        name="garden",
        items=("roses", "carrots", "trees", "tulips"),
        start={
            "*": (
                "{name} plants {a} rows of {item} with {b} {item} in each row.",
                "{Pron} plants {a} * {b} = {x} {item}.",
            ),
            "+": (
                "{name} plants {a} {item} and then {b} more {item}.",
                "{Pron} plants {a} + {b} = {x} {item}.",
            ),
        },
        steps={
            "+": (
                "Then {pron} plants {n} more {item}.",
                "{Pron} plants {n} more, so there are {x} + {n} = {y} {item}.",
            ),
            "-": ("Rabbits eat {n} of the {item}.", "Rabbits eat {n}, so there are {x} - {n} = {y} {item}."),
            "*": ("By summer there are {n} times as many {item}.", "There are {x} * {n} = {y} {item}."),
            "/": (
                "{Pron} gives the {item} equally to {n} friends and keeps one share.",
                "One share is {x} / {n} = {y} {item}.",
            ),
        },
        ask="How many {item} does {name} have now?",
        state="there are {v} {item}",
    ),
)


def _apply(op: str, x: int, n: int) -> int:
    """Result of one integer operation (division is exact by construction)."""
    if op == "+":
        return x + n
    if op == "-":
        return x - n
    if op == "*":
        return x * n
    return x // n


def _operand(rng: random.Random, op: str, x: int, max_result: int = MAX_RESULT) -> int | None:
    """A small operand that keeps the result a positive integer up to max_result, or None."""
    if op == "+":
        hi = min(20, max_result - x)
        return rng.randint(2, hi) if hi >= 2 else None
    if op == "-":
        hi = min(20, x - 1)  # leave at least one
        return rng.randint(2, hi) if hi >= 2 else None
    if op == "*":
        options = [n for n in (2, 3, 4, 5) if x * n <= max_result and (n <= 3 or x <= 20)]
        return rng.choice(options) if options else None
    options = [n for n in range(2, 11) if x % n == 0 and x // n >= 2]
    return rng.choice(options) if options else None


def _styled(template: Template, words: dict, line: str, equation: str, y: int, first: bool, rng) -> str:
    """One solution line in a style drawn from `rng`: the scenario's own sentence, a lead word
    and the bare equation, or the equation then the new state (every style holds `a op b = c`)."""
    style = rng.randrange(3)
    if style == 0:
        return line
    if style == 1:
        return f"{rng.choice(LEADS[0] if first else LEADS[1])} {equation} {words['item']}."
    return f"{equation}, so {template.state.format(v=y, **words)}."


def _one_problem(rng: random.Random, n_steps: int, max_result: int = MAX_RESULT) -> tuple[str, str, int]:
    """Draw one problem with exactly n_steps computations: (question, solution, answer).

    The styles of the solution lines come from a second generator seeded by the question,
    so the questions and answers are those the main generator alone would give.
    """
    template = rng.choice(TEMPLATES)
    name, pron = rng.choice(NAMES)
    words = {"name": name, "pron": pron, "Pron": pron.capitalize(), "item": rng.choice(template.items)}
    start_op = rng.choice(sorted(template.start))
    if start_op == "*":
        a = rng.randint(2, min(12, max_result // 2))
        b = rng.randint(2, min(20, max_result // a))
    else:
        a = rng.randint(2, min(20, max_result // 2 - 1))
        b = rng.randint(2, min(20, max_result - a))
    x = _apply(start_op, a, b)
    q_text, s_text = template.start[start_op]
    question = [q_text.format(a=a, b=b, **words)]
    lines = [(s_text.format(a=a, b=b, x=x, **words), f"{a} {start_op} {b} = {x}", x)]
    for _ in range(n_steps - 1):
        while True:  # "+" or "-" is always possible, so this ends
            op = rng.choices(OPS, weights=OP_WEIGHTS)[0]
            n = _operand(rng, op, x, max_result)
            if n is not None:
                break
        y = _apply(op, x, n)
        q_text, s_text = template.steps[op]
        question.append(q_text.format(n=n, **words))
        lines.append((s_text.format(x=x, n=n, y=y, **words), f"{x} {op} {n} = {y}", y))
        x = y
    question.append(template.ask.format(**words))
    text = " ".join(question)
    styles = random.Random(f"wsg-styles-{text}")
    solution = [_styled(template, words, *line, first=i == 0, rng=styles) for i, line in enumerate(lines)]
    return text, "\n".join([*solution, f"#### {x}"]), x


def split_of(question: str) -> str:
    """The split a question belongs to, from a hash of its text (so never both)."""
    digest = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big")
    return "test" if digest % TEST_SHARE == 0 else "train"


def generate_problems(
    n: int,
    seed: int,
    split: str = "train",
    min_steps: int = 2,
    max_steps: int = 4,
    max_result: int = MAX_RESULT,
) -> list[dict[str, str]]:
    """`n` distinct problems of `split`, each {"id", "question", "solution", "answer"}.

    Deterministic in (n, seed, split, min_steps, max_steps, max_result); a longer list
    starts with the shorter one. Ids are "gen-<split>-<index>". `max_result` bounds
    every intermediate and final number (difficulty for a small model is mostly the
    number of digits it must add and multiply).
    """
    if split not in SPLITS:
        raise ValueError(f"generate_problems: split must be one of {SPLITS}, got {split!r}")
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"generate_problems: need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    if n < 0:
        raise ValueError(f"generate_problems: n must be non-negative, got {n}")
    if max_result < 12:
        raise ValueError(f"generate_problems: max_result must be at least 12, got {max_result}")
    rng = random.Random(f"wsg-problems-{seed}")  # str seeds are hashed stably across runs
    problems: list[dict[str, str]] = []
    seen: set[str] = set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"generate_problems: could not find {n} distinct {split} problems")
        question, solution, answer = _one_problem(rng, rng.randint(min_steps, max_steps), max_result)
        if question in seen or split_of(question) != split:
            continue
        seen.add(question)
        problems.append(
            {
                "id": f"gen-{split}-{len(problems):05d}",
                "question": question,
                "solution": solution,
                "answer": str(answer),
            }
        )
    return problems


def problem_corpus(problems: Sequence[dict[str, str]]) -> list[str]:
    """Texts for tokenizer training: each problem as the model sees it (prompt + completion)."""
    return [build_prompt(p["question"]) + build_completion(p["solution"]) for p in problems]
