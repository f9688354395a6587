"""Arithmetic expressions as trees: parse text, render text, evaluate exactly.

The grammar is the task's: non-negative integer literals (an integer literal may carry
one leading ``-``, e.g. ``-3``), the binary operators ``+ - * /`` with the usual
precedence (``*`` and ``/`` bind tighter) and left associativity, and round brackets.
``/`` is exact division: values are :class:`fractions.Fraction`, so ``7 / 2`` is ``7/2``,
never ``3``. Spaces between tokens are ignored when parsing; :func:`render` writes one
space around each operator and the fewest brackets that keep the tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

OPERATORS = "+-*/"
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_TOKEN = re.compile(r"\s*(?:(\d+)|([-+*/()]))")
_MAX_DEPTH = 64


@dataclass(frozen=True)
class Num:
    """An integer literal."""

    value: int


@dataclass(frozen=True)
class BinOp:
    """``left op right`` with ``op`` one of ``+ - * /``."""

    op: str
    left: Expr
    right: Expr


Expr = Num | BinOp


def apply(op: str, a: Fraction | int, b: Fraction | int) -> Fraction:
    """``a op b`` exactly; raises ZeroDivisionError for ``/`` by zero."""
    if op == "+":
        return Fraction(a) + b
    if op == "-":
        return Fraction(a) - b
    if op == "*":
        return Fraction(a) * b
    if op == "/":
        return Fraction(a) / b
    raise ValueError(f"unknown operator {op!r}, expected one of {OPERATORS!r}")


def evaluate(expr: Expr) -> Fraction:
    """The exact value of ``expr``; raises ZeroDivisionError on division by zero."""
    if isinstance(expr, Num):
        return Fraction(expr.value)
    return apply(expr.op, evaluate(expr.left), evaluate(expr.right))


def render(expr: Expr) -> str:
    """Text such that ``parse(render(e)) == e``: e.g. ``"(17 + 8) * 3 - 12"``.

    A left operand is bracketed when it binds more loosely than its operator, a right
    operand when it binds as loosely or more (so ``a - (b - c)`` and ``a + (b + c)`` keep
    their brackets: the tree, and with it the order of evaluation, is kept exactly).
    """
    if isinstance(expr, Num):
        return str(expr.value)
    left, right = render(expr.left), render(expr.right)
    prec = _PRECEDENCE[expr.op]
    if isinstance(expr.left, BinOp) and _PRECEDENCE[expr.left.op] < prec:
        left = f"({left})"
    if isinstance(expr.right, BinOp) and _PRECEDENCE[expr.right.op] <= prec:
        right = f"({right})"
    return f"{left} {expr.op} {right}"


def parse(text: str) -> Expr:
    """Parse ``text`` (e.g. ``"(17 + 8) * 3 - 12"``) into a tree.

    Raises ValueError naming the offending position when ``text`` is not an expression
    of the grammar above or nests brackets more than 64 deep.
    """
    tokens = _tokenize(text)
    parser = _Parser(tokens, text)
    expr = parser.expression(0)
    if parser.pos != len(tokens):
        raise ValueError(f"unexpected {tokens[parser.pos]!r} in expression {text!r}")
    return expr


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].isspace():
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"unexpected character {text[pos:].lstrip()[:1]!r} in expression {text!r}")
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent over tokens; one instance parses one string."""

    def __init__(self, tokens: list[str], text: str):
        self.tokens, self.text, self.pos = tokens, text, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ValueError(f"expression {self.text!r} ends early")
        self.pos += 1
        return token

    def expression(self, depth: int) -> Expr:
        expr = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            expr = BinOp(op, expr, self.term(depth))
        return expr

    def term(self, depth: int) -> Expr:
        expr = self.primary(depth)
        while self.peek() in ("*", "/"):
            op = self.take()
            expr = BinOp(op, expr, self.primary(depth))
        return expr

    def primary(self, depth: int) -> Expr:
        token = self.take()
        if token == "(":
            if depth >= _MAX_DEPTH:
                raise ValueError(f"expression {self.text!r} nests brackets deeper than {_MAX_DEPTH}")
            expr = self.expression(depth + 1)
            if self.take() != ")":
                raise ValueError(f"missing ')' in expression {self.text!r}")
            return expr
        if token == "-" and self.peek() is not None and self.peek().isdigit():
            return Num(-int(self.take()))
        if token.isdigit():
            return Num(int(token))
        raise ValueError(f"unexpected {token!r} in expression {self.text!r}")
