"""The built-in arithmetic task wired for search: its checkpoints, a policy on it, its checker.

The package ships tiny checkpoints trained on the task (see :mod:`ponder.train`) as
Hugging Face directories under ``ponder/checkpoints/``:

* ``policy``: the Llama-architecture policy (``ponder train policy``);
* ``prm``: a process reward model trained on Monte-Carlo roll-out values of the
  policy (``ponder train prm``);
* ``prover``: the value of a best-of-4 prover of the policy, the advantage term of a
  process advantage verifier (``ponder train prm --prover-best-of 4``);
* ``revision``: the policy fine-tuned to answer again after up to four wrong attempts
  in its prompt, the policy of sequential revisions (``ponder train revision``).

They load through :func:`ponder.load_model` and :func:`ponder.load_prm` like any
checkpoint; :func:`checkpoint` gives their directories.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ponder.search.policy import Branch, ModelPolicy
from ponder.tasks.arithmetic import MAX_OPS, Problem
from ponder.tasks.task import ArithmeticTask

__all__ = ["CHECKPOINTS", "checkpoint", "task_policy", "task_checker", "task_answer"]

CHECKPOINTS = Path(__file__).parent / "checkpoints"
MAX_STEP_TOKENS = 32
"""A step of the task is at most 14 characters (``"999 - 99 = 900"``); 32 leaves room
and still cuts a rambling step short."""
MAX_STEPS = MAX_OPS + 2
"""Steps a solution may take: one per operation, the answer line, and one to spare."""

_TASK = ArithmeticTask()


def checkpoint(name: str) -> Path:
    """The directory of the shipped checkpoint ``name`` (``"policy"``, ``"prm"``, ``"prover"``, ``"revision"``)."""
    path = CHECKPOINTS / name
    if not (path / "config.json").is_file():
        shipped = sorted(p.name for p in CHECKPOINTS.iterdir() if (p / "config.json").is_file()) \
            if CHECKPOINTS.is_dir() else []
        raise FileNotFoundError(f"no built-in checkpoint {name!r}: the package ships {shipped}")
    return path


def task_policy(model, tokenizer, **options) -> ModelPolicy:
    """A :class:`ModelPolicy` that writes the task's solutions: its prompt, one step a line,
    finished at the ``"Answer: N"`` line. ``options`` override ModelPolicy's other arguments
    (``cache_tokens``, ``reference``, ...)."""
    settings = dict(prompt_template=_TASK.prompt_template, delimiter=_TASK.step_delimiter,
                    max_step_tokens=MAX_STEP_TOKENS, max_steps=MAX_STEPS, finished=_TASK.is_finished)
    settings.update(options)
    return ModelPolicy(model, tokenizer, **settings)


def task_checker(problems: Sequence[Problem]):
    """The checker of a search over ``problems``: ``checker(i, branch)`` is whether the
    branch's answer is that of ``problems[i]``."""
    return lambda i, branch: _TASK.is_correct(problems[i], branch.text)


def task_answer(branch: Branch) -> int | None:
    """The final answer of a branch (None without a well-formed ``"Answer: N"`` line)."""
    return _TASK.extract_answer(branch.text)
