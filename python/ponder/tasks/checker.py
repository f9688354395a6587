"""Exact checking of solutions: the final answer, and single steps.

A solution is text whose lines are steps; the answer is on a line ``"Answer: N"`` with
``N`` a base-10 integer, optionally negative (``"Answer: -3"``).
"""

from __future__ import annotations

import re

from ponder.tasks.arithmetic import Problem
from ponder.tasks.expression import evaluate, parse
from ponder.tasks.solutions import ANSWER_PREFIX

_ANSWER = re.compile(r"-?\d+")


def extract_answer(text: str) -> int | None:
    """The integer on the last line of ``text`` that starts with ``"Answer:"``.

    Lines after that one are ignored. Returns None when no line starts with
    ``"Answer:"``, or when the last such line is not exactly ``"Answer: N"`` (trailing
    spaces and a ``"\\r"`` allowed): ``"Answer: 63 apples"``, ``"Answer: 6.3"`` and
    ``"Answer:"`` give None, even when an earlier answer line is well formed.
    """
    lines = [line for line in text.split("\n") if line.startswith("Answer:")]
    if not lines:
        return None
    line = lines[-1].rstrip()
    number = line.removeprefix(ANSWER_PREFIX)
    if not line.startswith(ANSWER_PREFIX) or not _ANSWER.fullmatch(number):
        return None
    try:
        return int(number)
    except ValueError:  # more digits than Python converts
        return None


def is_correct(problem: Problem, text: str) -> bool:
    """Whether the answer extracted from ``text`` is ``problem.answer``."""
    return extract_answer(text) == problem.answer


def check_step(line: str) -> bool:
    """Whether ``line`` is an equation ``"lhs = rhs"`` whose sides are equal.

    Each side is an expression of :mod:`ponder.tasks.expression` (integers,
    ``+ - * /``, brackets; ``/`` exact), e.g. ``"17 + 8 = 25"`` or
    ``"(17 + 8) * 3 - 12 = 25 * 3 - 12"``. False for wrong arithmetic, for anything that
    is not such an equation (including the ``"Answer: N"`` line; check that with
    :func:`is_correct`), and for a division by zero. The line is checked on its own:
    a right equation about the wrong numbers is still True.
    """
    sides = line.split("=")
    if len(sides) != 2:
        return False
    try:
        return evaluate(parse(sides[0])) == evaluate(parse(sides[1]))
    except (ValueError, ZeroDivisionError):
        return False
