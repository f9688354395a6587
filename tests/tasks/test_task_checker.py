"""ponder.tasks.checker: answer extraction edge cases, exact correctness, step checks."""

import pytest

from ponder.tasks.arithmetic import LEVELS, generate
from ponder.tasks.checker import check_step, extract_answer, is_correct


@pytest.mark.parametrize("text, expected", [
    ("Answer: 63", 63),
    ("17 + 8 = 25\nAnswer: 25\n", 25),
    ("Answer: -3", -3),
    ("Answer: 0", 0),
    ("Answer: 007", 7),
    ("Answer: 63  \r", 63),
    ("Answer: 5\nAnswer: 6\n", 6),             # two answers: the last
    ("Answer: 5\nsome junk after\n+ 3", 5),    # lines after the answer line are ignored
    ("Answer: 5\nAnswer: 6 apples", None),     # the last answer line is malformed
    ("", None),
    ("17 + 8 = 25\n", None),
    ("The Answer: 5", None),                   # must start the line
    ("answer: 5", None),
    ("Answer:5", None),
    ("Answer: ", None),
    ("Answer: 6.3", None),
    ("Answer: 63 apples", None),
    ("Answer: +63", None),
    ("Answer: --3", None),
    ("Answer: 1" + "0" * 5000, None),          # too long for int()
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_is_correct():
    problem = generate(LEVELS[4], 3)
    assert is_correct(problem, "\n".join(problem.steps))
    assert is_correct(problem, f"Answer: {problem.answer}")
    assert not is_correct(problem, f"Answer: {problem.answer + 1}")
    assert not is_correct(problem, "\n".join(problem.steps[:-1]))
    assert not is_correct(problem, f"Answer: {problem.answer}\nAnswer: {problem.answer + 1}")


def test_reference_steps_pass_and_corrupted_steps_fail():
    for difficulty in LEVELS.values():
        for seed in range(20):
            for line in generate(difficulty, seed).steps[:-1]:
                assert check_step(line)
                left, result = line.rsplit(" = ", 1)
                assert not check_step(f"{left} = {int(result) + 1}")
                assert not check_step(f"{left} = {int(result) - 10}")


@pytest.mark.parametrize("line, expected", [
    ("17 + 8 = 25", True),
    ("17+8=25", True),
    ("(17 + 8) * 3 - 12 = 25 * 3 - 12", True),
    ("5 - 8 = -3", True),
    ("84 / 7 = 12", True),
    ("7 / 2 * 2 = 7", True),
    ("17 + 8 = 26", False),
    ("7 / 2 = 3", False),                      # '/' is exact, not floor division
    ("5 / 0 = 0", False),
    ("17 + 8 = 25 = 25", False),
    ("17 + 8", False),
    ("17 + 8 =", False),
    ("= 25", False),
    ("Answer: 25", False),
    ("17 + eight = 25", False),
    ("(" * 100 + "1" + ")" * 100 + " = 1", False),
])
def test_check_step(line, expected):
    assert check_step(line) is expected
