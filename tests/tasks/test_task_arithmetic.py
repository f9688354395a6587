"""ponder.tasks.arithmetic: determinism, difficulty knobs respected, answers right."""

import re

import pytest

from ponder.tasks.arithmetic import LEVELS, MAX_DIGITS, MAX_OPS, Difficulty, Problem, generate
from ponder.tasks.expression import BinOp, Num, parse

KNOBS = [Difficulty(n, d, ops, shape)
         for n in (1, 3, 6, 8) for d in (1, 2, 3) for ops in ("+-*", "+-*/", "+", "-/")
         for shape in ("chain", "tree")
         if not (ops == "-/" and shape == "chain" and n >= 6)]  # shrinks below every operand


def python_value(expression: str) -> int:
    """The expression evaluated by Python itself (every '/' is exact, so '//' is the same)."""
    assert re.fullmatch(r"[0-9+\-*/() ]+", expression)
    return eval(expression.replace("/", "//"))


def nodes(tree):
    if isinstance(tree, BinOp):
        yield tree
        yield from nodes(tree.left)
        yield from nodes(tree.right)


def int_values(tree):
    """Every intermediate result of the tree, computed with Python ints."""
    if isinstance(tree, Num):
        return tree.value, []
    a, left = int_values(tree.left)
    b, right = int_values(tree.right)
    if tree.op == "/":
        assert b != 0 and a % b == 0, "division must be exact"
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else None}[tree.op]
    return value, left + right + [value]


def test_same_seed_same_problem_different_seeds_differ():
    for difficulty in LEVELS.values():
        assert generate(difficulty, 123) == generate(difficulty, 123)
        assert len({generate(difficulty, seed).prompt for seed in range(20)}) > 10


def test_golden_problem():
    """Pins generation: the splits are fixed only while this stays the same."""
    difficulty = Difficulty(n_ops=3, digits=2, operators="+-*", shape="chain")
    problem = generate(difficulty, 7)
    assert problem == Problem(
        prompt=problem.prompt, expression=problem.expression, steps=problem.steps, answer=problem.answer,
        difficulty=difficulty, seed=7)
    assert (problem.prompt, problem.steps) == (
        "Compute 93 - 16 + 84 + 21.", ("93 - 16 = 77", "77 + 84 = 161", "161 + 21 = 182", "Answer: 182"))


@pytest.mark.parametrize("difficulty", KNOBS, ids=str)
def test_difficulty_respected_and_answer_right(difficulty):
    for seed in range(15):
        problem = generate(difficulty, seed)
        tree = parse(problem.expression)
        assert problem.prompt == f"Compute {problem.expression}."
        assert problem.answer == python_value(problem.expression)
        assert len(list(nodes(tree))) == difficulty.n_ops
        assert len(problem.steps) == difficulty.n_ops + 1
        assert problem.steps[-1] == f"Answer: {problem.answer}"
        assert {node.op for node in nodes(tree)} <= set(difficulty.operators)
        for number in re.findall(r"\d+", problem.expression):
            assert len(number) == difficulty.digits and number[0] != "0"
        value, intermediate = int_values(tree)
        assert value == problem.answer
        assert all(1 <= v <= difficulty.max_value for v in intermediate)
        if difficulty.shape == "chain":
            assert all(isinstance(node.right, Num) for node in nodes(tree))


def test_tree_shape_brackets_both_sides():
    trees = [parse(generate(Difficulty(6, 2, "+-*/", "tree"), seed).expression) for seed in range(50)]
    assert any(not isinstance(node.right, Num) and not isinstance(node.left, Num)
               for tree in trees for node in nodes(tree))


def test_levels_every_operator_appears():
    for difficulty in LEVELS.values():
        used = {op for seed in range(100) for op in generate(difficulty, seed).expression if op in "+-*/"}
        assert used == set(difficulty.operators)


def test_operators_normalised_and_level_lookup():
    assert Difficulty(4, 1, "/*-+", "chain") == LEVELS[2]
    assert Difficulty(4, 1, "/*-+", "chain").level == 2
    assert [d.level for d in LEVELS.values()] == [1, 2, 3, 4, 5]
    assert Difficulty(2, 1, "+").level == 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_ops=0, digits=1), "n_ops must be an int in 1..8, got 0"),
    (dict(n_ops=MAX_OPS + 1, digits=1), "n_ops"),
    (dict(n_ops=2.0, digits=1), "n_ops"),
    (dict(n_ops=2, digits=0), "digits must be an int in 1..3, got 0"),
    (dict(n_ops=2, digits=MAX_DIGITS + 1), "digits"),
    (dict(n_ops=2, digits=1, operators=""), "operators must be a non-empty string"),
    (dict(n_ops=2, digits=1, operators="+%"), "got '\\+%'"),
    (dict(n_ops=2, digits=1, operators="++"), "distinct"),
    (dict(n_ops=2, digits=1, shape="balanced"), "shape must be one of"),
])
def test_invalid_difficulty_says_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Difficulty(**kwargs)


@pytest.mark.parametrize("difficulty", [Difficulty(n_ops=3, digits=3, operators="*"),
                                        Difficulty(n_ops=6, digits=2, operators="-/", shape="chain")], ids=str)
def test_infeasible_difficulty_says_so(difficulty):
    with pytest.raises(ValueError, match="no expression satisfies"):
        generate(difficulty, 0)
