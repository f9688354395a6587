"""ponder.tasks.task: the text format and checks the search layer uses."""

from ponder.tasks import ArithmeticTask, Difficulty, generate, split
from ponder.tasks.arithmetic import LEVELS

TASK = ArithmeticTask()


def test_format_round_trip_and_correctness():
    problem = generate(LEVELS[2], 4)
    prompt = TASK.format_prompt(problem)
    assert prompt == f"Q: Compute {problem.expression}.\nA:\n"
    solution = TASK.format_solution(problem.steps)
    assert solution.endswith(f"Answer: {problem.answer}\n") and solution.count("\n") == len(problem.steps)
    assert TASK.split_steps(solution) == list(problem.steps)
    assert TASK.split_steps("1 + 2 = 3\n3 *") == ["1 + 2 = 3", "3 *"]
    assert TASK.split_steps("") == []
    assert TASK.step_delimiter == "\n"
    assert TASK.extract_answer(prompt + solution) == problem.answer
    assert TASK.is_correct(problem, prompt + solution)
    assert not TASK.is_correct(problem, prompt + solution.replace(f"Answer: {problem.answer}", "Answer: -1"))


def test_difficulty_is_the_level():
    assert [TASK.difficulty(p) for p in split("validation", 5)] == [1, 2, 3, 4, 5]
    assert TASK.difficulty(generate(Difficulty(2, 3, "+"), 0)) == 0
    assert TASK.split("test", 3) == split("test", 3)
