"""Correct step-by-step solutions of an expression, in several styles.

A solution is a tuple of lines without newlines: one line per operation, then
``"Answer: N"``. Every style gives ``n_ops + 1`` lines, and every operation line is an
equation whose two sides are equal (see :func:`ponder.tasks.checker.check_step`). The
styles vary the form so that correct solutions of one problem differ::

    (17 + 8) * 3 - 12, canonical         commute=True, rewrite=True
    17 + 8 = 25                          3 * (8 + 17) - 12 = 3 * 25 - 12
    25 * 3 = 75                          3 * 25 - 12 = 75 - 12
    75 - 12 = 63                         75 - 12 = 63
    Answer: 63                           Answer: 63
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from ponder.tasks.expression import BinOp, Expr, Num, evaluate, parse, render

ANSWER_PREFIX = "Answer: "
ORDERS = ("left", "any")


@dataclass(frozen=True)
class SolutionStyle:
    """How a solution is written.

    order:   ``"left"``: operations in the usual evaluation order (left operand first);
             ``"any"``: at each step a random operation whose operands are both numbers.
    commute: swap the operands of each ``+`` and ``*`` with probability 1/2
             (``8 + 17`` for ``17 + 8``).
    regroup: re-bracket each run of one associative operator (``+`` or ``*``) at random,
             keeping the operands' order (``a + (b + c)`` for ``a + b + c``).
    rewrite: write each step as ``whole expression = whole expression after the step``
             (``(17 + 8) * 3 - 12 = 25 * 3 - 12``) rather than ``17 + 8 = 25``.
    """

    order: str = "left"
    commute: bool = False
    regroup: bool = False
    rewrite: bool = False

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")


CANONICAL = SolutionStyle()
STYLES: tuple[SolutionStyle, ...] = tuple(
    SolutionStyle(order, commute, regroup, rewrite)
    for order, commute, regroup, rewrite in itertools.product(ORDERS, (False, True), (False, True), (False, True)))
"""All 16 styles; ``STYLES[0]`` is :data:`CANONICAL`."""


def solve(expression: str, style: SolutionStyle = CANONICAL, seed: int = 0) -> tuple[str, ...]:
    """A correct solution of ``expression`` (e.g. ``"(17 + 8) * 3 - 12"``) in ``style``.

    ``seed`` drives the style's random choices; the canonical style ignores it. Raises
    ValueError if ``expression`` does not parse or a division in it is not exact.
    """
    rng = random.Random(seed)
    tree = parse(expression)
    if style.regroup:
        tree = _regroup(tree, rng)
    if style.commute:
        tree = _commute(tree, rng)
    lines = []
    while isinstance(tree, BinOp):
        path = _pick(tree, style.order, rng)
        node = _at(tree, path)
        value = evaluate(node)
        if value.denominator != 1:
            raise ValueError(f"{render(node)} is not an exact division in expression {expression!r}")
        reduced = _replace(tree, path, Num(int(value)))
        lines.append(f"{render(tree)} = {render(reduced)}" if style.rewrite else f"{render(node)} = {int(value)}")
        tree = reduced
    lines.append(f"{ANSWER_PREFIX}{tree.value}")
    return tuple(lines)


def sample_solution(expression: str, seed: int,
                    styles: tuple[SolutionStyle, ...] = STYLES) -> tuple[str, ...]:
    """A solution in a style drawn uniformly from ``styles`` with ``seed`` (training data)."""
    rng = random.Random(seed)
    return solve(expression, rng.choice(styles), rng.randrange(2**32))


Path = tuple[int, ...]
"""Where a node sits: 0 = left, 1 = right at each level from the root."""


def _ready(tree: Expr, path: Path = ()) -> list[Path]:
    """Paths of the operations whose operands are both numbers, in evaluation order."""
    if isinstance(tree, Num):
        return []
    if isinstance(tree.left, Num) and isinstance(tree.right, Num):
        return [path]
    return _ready(tree.left, path + (0,)) + _ready(tree.right, path + (1,))


def _pick(tree: BinOp, order: str, rng: random.Random) -> Path:
    ready = _ready(tree)
    return ready[0] if order == "left" else rng.choice(ready)


def _at(tree: Expr, path: Path) -> Expr:
    for side in path:
        tree = tree.right if side else tree.left
    return tree


def _replace(tree: Expr, path: Path, new: Expr) -> Expr:
    if not path:
        return new
    if path[0]:
        return BinOp(tree.op, tree.left, _replace(tree.right, path[1:], new))
    return BinOp(tree.op, _replace(tree.left, path[1:], new), tree.right)


def _commute(tree: Expr, rng: random.Random) -> Expr:
    if isinstance(tree, Num):
        return tree
    left, right = _commute(tree.left, rng), _commute(tree.right, rng)
    if tree.op in "+*" and rng.random() < 0.5:
        left, right = right, left
    return BinOp(tree.op, left, right)


def _regroup(tree: Expr, rng: random.Random) -> Expr:
    if isinstance(tree, Num):
        return tree
    if tree.op not in "+*":
        return BinOp(tree.op, _regroup(tree.left, rng), _regroup(tree.right, rng))
    operands = [_regroup(x, rng) for x in _run(tree, tree.op)]
    return _bracket(tree.op, operands, rng)


def _run(tree: Expr, op: str) -> list[Expr]:
    """The operands of the maximal run of ``op`` rooted at ``tree``, left to right."""
    if isinstance(tree, BinOp) and tree.op == op:
        return _run(tree.left, op) + _run(tree.right, op)
    return [tree]


def _bracket(op: str, operands: list[Expr], rng: random.Random) -> Expr:
    """``operands`` joined by ``op`` in their order under a random bracketing."""
    if len(operands) == 1:
        return operands[0]
    cut = rng.randrange(1, len(operands))
    return BinOp(op, _bracket(op, operands[:cut], rng), _bracket(op, operands[cut:], rng))
