"""ponder.tasks.expression: render/parse round trip, exact evaluation, parse errors."""

import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ponder.tasks.expression import BinOp, Num, evaluate, parse, render

trees = st.recursive(st.builds(Num, st.integers(0, 999)),
                     lambda sub: st.builds(BinOp, st.sampled_from("+-*/"), sub, sub), max_leaves=12)


@given(trees)
def test_render_parse_round_trip(tree):
    assert parse(render(tree)) == tree


@given(trees)
def test_evaluate_matches_python_fractions(tree):
    text = render(tree)
    python = re.sub(r"\d+", lambda m: f"Fraction({m.group()})", text)
    try:
        expected = eval(python, {"Fraction": Fraction})
    except ZeroDivisionError:
        with pytest.raises(ZeroDivisionError):
            evaluate(tree)
        return
    assert evaluate(tree) == expected


@pytest.mark.parametrize("text, expected", [
    ("17 + 8 * 3", BinOp("+", Num(17), BinOp("*", Num(8), Num(3)))),
    ("(17 + 8) * 3", BinOp("*", BinOp("+", Num(17), Num(8)), Num(3))),
    ("9 - 4 - 2", BinOp("-", BinOp("-", Num(9), Num(4)), Num(2))),
    ("9 - (4 - 2)", BinOp("-", Num(9), BinOp("-", Num(4), Num(2)))),
    ("8/4/2", BinOp("/", BinOp("/", Num(8), Num(4)), Num(2))),
    (" -3 ", Num(-3)),
    ("5 - -3", BinOp("-", Num(5), Num(-3))),
])
def test_parse_precedence_and_associativity(text, expected):
    assert parse(text) == expected


def test_render_keeps_needed_brackets_only():
    assert render(parse("(17 + 8) * 3 - 12")) == "(17 + 8) * 3 - 12"
    assert render(parse("(17 * 8) + (3 - 12)")) == "17 * 8 + (3 - 12)"
    assert render(parse("2 + (3 + 4)")) == "2 + (3 + 4)"


def test_exact_division():
    assert evaluate(parse("7 / 2")) == Fraction(7, 2)
    assert evaluate(parse("7 / 2 * 2")) == 7


@pytest.mark.parametrize("text, message", [
    ("", "ends early"), ("1 +", "ends early"), ("(1 + 2", "ends early"), ("(1 + 2 3", "missing"),
    ("1 2", "unexpected '2'"),
    ("1 + x", "unexpected character 'x'"), ("1 ^ 2", "unexpected character"), ("* 3", "unexpected '\\*'"),
    ("-(3)", "unexpected '-'"), ("(" * 65 + "1" + ")" * 65, "deeper than 64"),
])
def test_parse_errors_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)
