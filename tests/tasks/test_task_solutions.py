"""ponder.tasks.solutions: every style is correct, styles vary, seeds reproduce."""

import re

import pytest

from ponder.tasks.arithmetic import LEVELS, Difficulty, generate
from ponder.tasks.checker import check_step, extract_answer
from ponder.tasks.solutions import CANONICAL, STYLES, SolutionStyle, sample_solution, solve

PROBLEMS = [generate(d, seed) for d in LEVELS.values() for seed in range(12)] + [
    generate(Difficulty(8, 1, "+-*/", "tree"), seed) for seed in range(12)]


def test_styles_are_all_combinations():
    assert len(set(STYLES)) == 16 and STYLES[0] == CANONICAL


@pytest.mark.parametrize("style", STYLES, ids=str)
def test_every_style_is_correct(style):
    """Right steps, right answer, and no number outside the problem's range."""
    for problem in PROBLEMS:
        for seed in range(3):
            lines = solve(problem.expression, style, seed)
            assert len(lines) == problem.difficulty.n_ops + 1
            assert all(check_step(line) for line in lines[:-1]), lines
            assert lines[-1] == f"Answer: {problem.answer}"
            assert extract_answer("\n".join(lines)) == problem.answer
            assert all("\n" not in line for line in lines)
            numbers = [int(n) for line in lines for n in re.findall(r"\d+", line)]
            assert all(1 <= n <= problem.difficulty.max_value for n in numbers)


def test_reference_steps_are_canonical_and_compact():
    for problem in PROBLEMS:
        assert problem.steps == solve(problem.expression)
        for line in problem.steps[:-1]:
            left, result = line.split(" = ")
            assert len(left.split(" ")) == 3 and result.isdigit()


def test_rewrite_lines_chain_from_the_expression():
    lines = solve("(17 + 8) * 3 - 12", SolutionStyle(rewrite=True))
    assert lines == ("(17 + 8) * 3 - 12 = 25 * 3 - 12", "25 * 3 - 12 = 75 - 12", "75 - 12 = 63", "Answer: 63")


def test_styles_vary_the_solution():
    expression = "(12 + 7 + 30) * (9 - 4) - 18 / 6"
    for style in STYLES[1:]:
        assert len({solve(expression, style, seed) for seed in range(30)} | {solve(expression)}) > 1, style
    assert len({sample_solution(expression, seed) for seed in range(100)}) > 30


def test_any_order_does_independent_steps_in_either_order():
    firsts = {solve("(1 + 2) * (3 + 4)", SolutionStyle(order="any"), seed)[0] for seed in range(20)}
    assert firsts == {"1 + 2 = 3", "3 + 4 = 7"}


def test_regroup_reassociates_but_keeps_order():
    firsts = {solve("1 + 2 + 3", SolutionStyle(regroup=True), seed)[0] for seed in range(20)}
    assert firsts == {"1 + 2 = 3", "2 + 3 = 5"}


def test_seeded_styles_are_deterministic():
    for style in STYLES:
        assert solve(PROBLEMS[-1].expression, style, 5) == solve(PROBLEMS[-1].expression, style, 5)
    assert sample_solution(PROBLEMS[-1].expression, 9) == sample_solution(PROBLEMS[-1].expression, 9)


def test_errors():
    with pytest.raises(ValueError, match="order must be one of"):
        SolutionStyle(order="random")
    with pytest.raises(ValueError, match="7 / 2 is not an exact division"):
        solve("1 + 7 / 2")
    with pytest.raises(ValueError, match="unexpected character"):
        solve("1 + x")
