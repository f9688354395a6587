"""The arithmetic task as the search layer sees it: text in, text out, exact checks.

Text format, for a prompt and a (partial) solution, one step per line::

    Q: Compute (17 + 8) * 3 - 12.
    A:
    17 + 8 = 25
    25 * 3 = 75
    75 - 12 = 63
    Answer: 63

``format_prompt`` gives the first two lines (ending in ``"\\n"``); a policy then writes
steps, each ended by ``step_delimiter``; the solution is finished at the
``"Answer: N"`` line.
"""

from __future__ import annotations

from collections.abc import Sequence

from ponder.tasks import checker, splits
from ponder.tasks.arithmetic import Problem


class ArithmeticTask:
    """Multi-step arithmetic (:mod:`ponder.tasks.arithmetic`) with exact answer checking."""

    step_delimiter = "\n"
    prompt_template = "Q: {question}\nA:\n"
    """``str.format`` template of the text before the first step; ``question`` is a problem's prompt."""

    def format_prompt(self, problem: Problem) -> str:
        """``"Q: <prompt>\\nA:\\n"``, e.g. ``"Q: Compute 7 + 5.\\nA:\\n"``."""
        return self.prompt_template.format(question=problem.prompt)

    def is_finished(self, steps: Sequence[str]) -> bool:
        """Whether a partial solution has reached its ``"Answer: ..."`` line."""
        return bool(steps) and steps[-1].startswith("Answer:")

    def format_solution(self, steps: Sequence[str]) -> str:
        """Steps joined as a policy writes them: each followed by ``step_delimiter``."""
        return "".join(step + self.step_delimiter for step in steps)

    def split_steps(self, solution: str) -> list[str]:
        """The steps of solution text (inverse of :meth:`format_solution`): its lines,
        without a trailing empty one."""
        steps = solution.split(self.step_delimiter)
        return steps[:-1] if steps and steps[-1] == "" else steps

    def extract_answer(self, text: str) -> int | None:
        """See :func:`ponder.tasks.checker.extract_answer`."""
        return checker.extract_answer(text)

    def is_correct(self, problem: Problem, text: str) -> bool:
        """See :func:`ponder.tasks.checker.is_correct`."""
        return checker.is_correct(problem, text)

    def difficulty(self, problem: Problem) -> int:
        """The preset level 1..5 of ``problem`` (:data:`ponder.tasks.arithmetic.LEVELS`),
        0 when it was generated with other knobs."""
        return problem.difficulty.level

    def split(self, name: str, n: int | None = None) -> list[Problem]:
        """See :func:`ponder.tasks.splits.split`."""
        return splits.split(name, n)
