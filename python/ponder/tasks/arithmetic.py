"""Multi-step arithmetic problems with controllable difficulty, deterministic by seed.

A problem asks for the value of an expression such as ``(17 + 8) * 3 - 12``; its
reference solution does one operation per line and ends with the answer line::

    17 + 8 = 25
    25 * 3 = 75
    75 - 12 = 63
    Answer: 63

Every problem satisfies its :class:`Difficulty`: exactly ``n_ops`` operations, every
operand exactly ``digits`` digits long, only the allowed operators, the bracket
structure of ``shape``, every intermediate result (and so the answer) an integer in
``[1, difficulty.max_value]``, every division exact with a divisor of at least 2.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ponder.tasks.expression import OPERATORS, BinOp, Expr, Num, render
from ponder.tasks.solutions import solve

MAX_OPS = 8
MAX_DIGITS = 3
SHAPES = ("chain", "tree")
_ATTEMPTS = 1000
_EXACT = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}  # '/' only where exact


@dataclass(frozen=True)
class Difficulty:
    """The knobs of a problem.

    n_ops:     number of operations, 1..8 (the solution has ``n_ops`` step lines).
    digits:    length of every operand, 1..3 (1-digit operands are 1..9, never 0).
    operators: the allowed operators, a non-empty subset of ``"+-*/"`` given as a
               string (kept in the order ``+ - * /``); ``/`` is exact division.
    shape:     ``"chain"``: ``((a op b) op c) op d``, each operation takes the result
               so far and one new operand, brackets only where precedence needs them;
               ``"tree"``: random binary tree, e.g. ``(a + b) * (c - d)``, where steps
               can be done in more than one order.
    """

    n_ops: int
    digits: int
    operators: str = "+-*"
    shape: str = "chain"

    def __post_init__(self):
        if not isinstance(self.n_ops, int) or not 1 <= self.n_ops <= MAX_OPS:
            raise ValueError(f"n_ops must be an int in 1..{MAX_OPS}, got {self.n_ops!r}")
        if not isinstance(self.digits, int) or not 1 <= self.digits <= MAX_DIGITS:
            raise ValueError(f"digits must be an int in 1..{MAX_DIGITS}, got {self.digits!r}")
        if (not isinstance(self.operators, str) or not self.operators
                or any(op not in OPERATORS for op in self.operators)
                or len(set(self.operators)) != len(self.operators)):
            raise ValueError(f"operators must be a non-empty string of distinct characters from "
                             f"{OPERATORS!r}, got {self.operators!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        object.__setattr__(self, "operators", "".join(op for op in OPERATORS if op in self.operators))

    @property
    def max_value(self) -> int:
        """Largest allowed intermediate result: ``10 ** (digits + 1) - 1``."""
        return 10 ** (self.digits + 1) - 1

    @property
    def level(self) -> int:
        """The preset level (a key of :data:`LEVELS`) equal to these knobs, else 0."""
        return next((k for k, d in LEVELS.items() if d == self), 0)


LEVELS: dict[int, Difficulty] = {
    1: Difficulty(n_ops=2, digits=1, operators="+-*", shape="chain"),   # 7 * 8 - 9
    2: Difficulty(n_ops=4, digits=1, operators="+-*/", shape="chain"),  # (3 + 5) * 3 / 8 + 7
    3: Difficulty(n_ops=1, digits=2, operators="+-", shape="chain"),    # 47 + 38
    4: Difficulty(n_ops=2, digits=2, operators="+-", shape="chain"),    # 61 - 25 + 47
    5: Difficulty(n_ops=3, digits=2, operators="+-", shape="chain"),    # 97 + 85 - 71 + 37
}
"""Preset difficulties, easiest first; the splits draw from these."""


@dataclass(frozen=True)
class Problem:
    """One problem.

    prompt:     the question, e.g. ``"Compute (17 + 8) * 3 - 12."``
    expression: the expression alone, e.g. ``"(17 + 8) * 3 - 12"`` (``/`` is exact division)
    steps:      the reference solution, one line per entry without newlines:
                ``n_ops`` lines ``"a op b = c"`` in the usual evaluation order, then ``"Answer: N"``
    answer:     the value of the expression
    difficulty: the knobs it was generated with
    seed:       the seed it was generated from
    """

    prompt: str
    expression: str
    steps: tuple[str, ...]
    answer: int
    difficulty: Difficulty
    seed: int


def generate(difficulty: Difficulty, seed: int) -> Problem:
    """The problem for ``(difficulty, seed)``; the same arguments give the same problem.

    Raises ValueError when 1000 tries find no expression that satisfies ``difficulty``:
    ``"*"`` alone with several 3-digit operands always exceeds ``max_value``, and six
    ``"-"``/``"/"`` in a chain almost always shrink the value below every operand.
    """
    expr, value = _random_expression(difficulty, random.Random(seed))
    text = render(expr)
    return Problem(prompt=f"Compute {text}.", expression=text, steps=solve(text), answer=value,
                   difficulty=difficulty, seed=seed)


class _Infeasible(Exception):
    """No operator and operands fit at some node; the caller starts over."""


def _random_expression(difficulty: Difficulty, rng: random.Random) -> tuple[Expr, int]:
    for _ in range(_ATTEMPTS):
        try:
            return _Builder(difficulty, rng).build(difficulty.n_ops)
        except _Infeasible:
            continue
    raise ValueError(f"no expression satisfies {difficulty} (found none in {_ATTEMPTS} attempts): "
                     f"allow more operators or fewer operations")


class _Builder:
    """Builds a tree bottom-up: sub-trees first, then an operator and leaves that fit them."""

    def __init__(self, difficulty: Difficulty, rng: random.Random):
        self.d, self.rng = difficulty, rng
        low = 1 if difficulty.digits == 1 else 10 ** (difficulty.digits - 1)
        self.leaves = range(low, 10 ** difficulty.digits)

    def build(self, n_ops: int) -> tuple[Expr, int]:
        """A tree with ``n_ops`` operations and its value."""
        n_left = n_ops - 1 if self.d.shape == "chain" else self.rng.randrange(n_ops)
        left = self.build(n_left) if n_left else None
        right = self.build(n_ops - 1 - n_left) if n_ops - 1 - n_left else None
        for op in self.rng.sample(self.d.operators, len(self.d.operators)):
            pair = self.operands(op, None if left is None else left[1], None if right is None else right[1])
            if pair is not None:
                a, b = pair
                expr = BinOp(op, left[0] if left else Num(a), right[0] if right else Num(b))
                return expr, _EXACT[op](a, b)
        raise _Infeasible

    def operands(self, op: str, a: int | None, b: int | None) -> tuple[int, int] | None:
        """Values for the missing leaves (None) such that ``a op b`` is allowed, or None."""
        if a is not None and b is not None:
            return (a, b) if self.allowed(op, a, b) else None
        if a is not None:
            choices = self.right_leaves(op, a)
            return (a, self.rng.choice(choices)) if choices else None
        if b is not None:
            choices = self.left_leaves(op, b)
            return (self.rng.choice(choices), b) if choices else None
        first = self.rng.choice(self.leaves)
        if self.right_leaves(op, first):
            return first, self.rng.choice(self.right_leaves(op, first))
        for x in self.rng.sample(self.leaves, len(self.leaves)):
            if self.right_leaves(op, x):
                return x, self.rng.choice(self.right_leaves(op, x))
        return None

    def allowed(self, op: str, a: int, b: int) -> bool:
        if op == "+":
            return a + b <= self.d.max_value
        if op == "-":
            return a > b
        if op == "*":
            return a * b <= self.d.max_value
        return b >= 2 and a % b == 0

    def right_leaves(self, op: str, a: int) -> Sequence[int]:
        """The leaves ``b`` with ``allowed(op, a, b)``; ``a >= 1``."""
        low, high = self.leaves.start, self.leaves.stop - 1
        if op == "+":
            return range(low, min(high, self.d.max_value - a) + 1)
        if op == "-":
            return range(low, min(high, a - 1) + 1)
        if op == "*":
            return range(low, min(high, self.d.max_value // a) + 1)
        return [b for b in range(max(low, 2), high + 1) if a % b == 0]

    def left_leaves(self, op: str, b: int) -> Sequence[int]:
        """The leaves ``a`` with ``allowed(op, a, b)``; ``b >= 1``."""
        low, high = self.leaves.start, self.leaves.stop - 1
        if op == "+":
            return range(low, min(high, self.d.max_value - b) + 1)
        if op == "-":
            return range(max(low, b + 1), high + 1)
        if op == "*":
            return range(low, min(high, self.d.max_value // b) + 1)
        return range(-(-low // b) * b, high + 1, b) if b >= 2 else range(0)
