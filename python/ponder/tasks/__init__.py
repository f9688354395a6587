"""Built-in verifiable task: multi-step integer arithmetic with exact checkers.

Modules, one concept each:
    expression  parse / render / evaluate arithmetic expressions
    arithmetic  Difficulty knobs, preset LEVELS, Problem, generate(difficulty, seed)
    solutions   correct solutions in 16 styles (order, commutation, regrouping, rewriting)
    checker     extract_answer, is_correct, check_step
    splits      fixed train / validation / test splits, disjoint by prompt
    task        ArithmeticTask: the text format and checks the search layer uses
    tokenizer   character-level tokenizer (needs the `tokenizers` package; import it directly)
"""

from ponder.tasks.arithmetic import LEVELS, Difficulty, Problem, generate
from ponder.tasks.checker import check_step, extract_answer, is_correct
from ponder.tasks.solutions import CANONICAL, STYLES, SolutionStyle, sample_solution, solve
from ponder.tasks.splits import SIZES, SPLITS, split, split_of
from ponder.tasks.task import ArithmeticTask

__all__ = [
    "CANONICAL", "LEVELS", "SIZES", "SPLITS", "STYLES", "ArithmeticTask", "Difficulty", "Problem", "SolutionStyle",
    "check_step", "extract_answer", "generate", "is_correct", "sample_solution", "solve", "split", "split_of",
]
