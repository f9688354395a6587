"""Process advantage verifiers (Setlur et al. 2024): reward a step by the progress it makes.

A step ``a_h`` taken in state ``s_h`` gets the effective reward

    Q(s_h, a_h) + alpha * A_mu(s_h, a_h),   A_mu(s_h, a_h) = V_mu(s_h + a_h) - V_mu(s_h)

where ``Q`` is the base PRM's score of the step and ``V_mu`` the value under a *prover*
policy ``mu``, read from a second PRM trained on that prover's roll-outs: its score after
the step minus its score before it (after the previous step, or at the prompt's last
token for the first step). Both PRMs keep their own KV tree; a
:class:`ProgressScorer` forks, extends and frees them together.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

from ponder.kv import BlockStateError
from ponder.prm.incremental import IncrementalScorer, ScoredSteps

__all__ = ["ProgressScorer"]


class ProgressScorer:
    """Scores ``Q + alpha * A`` per step from a base scorer and a prover scorer.

    Parameters
    ----------
    base : scorer of ``Q`` (its aggregate setting is not used here)
    prover : scorer of ``V_mu``; may use the same PRM as ``base`` (then ``A`` is the
        base PRM's own progress)
    alpha : weight of the advantage

    A branch's value is the effective reward of its latest step, the quantity PAV beam
    search ranks by. Branch ids are the base scorer's.
    """

    def __init__(self, base: IncrementalScorer, prover: IncrementalScorer, alpha: float = 1.0):
        if base is prover:
            raise ValueError("base and prover must be two scorers (each keeps its own KV tree), even over one PRM")
        self.base, self.prover, self.alpha = base, prover, float(alpha)
        self._prover_of: dict[int, int] = {}
        self._value: dict[int, float] = {}

    @property
    def tokens_processed(self) -> int:
        return self.base.tokens_processed + self.prover.tokens_processed

    def _prover_branch(self, branch: int) -> int:
        if branch not in self._prover_of:
            self.base._branch(branch)  # the base scorer's message: freed or unknown
            raise BlockStateError(f"branch {branch} is not a branch of this progress scorer")
        return self._prover_of[branch]

    @contextlib.contextmanager
    def _freed_on_error(self, base_branches: list[int]) -> Iterator[None]:
        """Free the new base branches if the prover's half of the call fails, so neither tree changes."""
        try:
            yield
        except BaseException:
            for b in base_branches:
                self.base.free(b)
            raise

    def _link(self, base_branches: list[int], prover_branches: list[int], value: float) -> None:
        for b, p in zip(base_branches, prover_branches):
            self._prover_of[b] = p
            self._value[b] = value

    def start(self, questions: Sequence[str]) -> tuple[list[int], torch.Tensor]:
        """Root branches for the questions, and the prover's value at each prompt (float32 [S])."""
        roots, _ = self.base.start(questions)
        with self._freed_on_error(roots):
            prover_roots, values = self.prover.start(questions)
        self._link(roots, prover_roots, float("nan"))
        return roots, values

    def fork(self, branch: int, n: int) -> list[int]:
        prover_branch = self._prover_branch(branch)
        children = self.base.fork(branch, n)
        with self._freed_on_error(children):
            prover_children = self.prover.fork(prover_branch, n)
        self._link(children, prover_children, self._value[branch])
        return children

    def free(self, branch: int) -> None:
        prover_branch = self._prover_branch(branch)
        self.base.free(branch)
        self.prover.free(prover_branch)
        del self._prover_of[branch], self._value[branch]

    def values(self, branches: Sequence[int]) -> torch.Tensor:
        """float32 [S]: each branch's latest effective reward (NaN before its first step)."""
        for b in branches:
            self._prover_branch(b)
        return torch.tensor([self._value[b] for b in branches], dtype=torch.float32)

    def extend(self, branches: Sequence[int], steps: Sequence[str | Sequence[str]],
               final: Sequence[bool] | None = None) -> ScoredSteps:
        """Append steps to both trees and return each step's ``Q + alpha * A`` (see IncrementalScorer.extend).

        Both caches are checked for room first, so OutOfBlocks (or bad input) changes
        neither. Should the prover's forward itself fail after the base's, the branches
        are out of step and the error says so.
        """
        branches = list(branches)
        prover_branches = [self._prover_branch(b) for b in branches]
        self.base.check_fits(branches, steps, final)
        self.prover.check_fits(prover_branches, steps, final)
        before = self.prover.last_scores(prover_branches)
        q = self.base.extend(branches, steps, final)
        try:
            v = self.prover.extend(prover_branches, steps, final)
        except BaseException as error:
            raise RuntimeError("the prover PRM failed after the base PRM took the step: these branches are now out "
                               "of step; free them") from error
        # V before each step: the prover's score after the previous step of the same branch.
        previous = before[v.branch].clone()
        for p in range(1, len(v.branch)):
            if v.branch[p] == v.branch[p - 1]:
                previous[p] = v.scores[p - 1]
        effective = q.scores + self.alpha * (v.scores - previous)
        last = {}
        for p, i in enumerate(v.branch.tolist()):
            last[i] = float(effective[p])
        for i, branch in enumerate(branches):
            self._value[branch] = last[i]
        values = torch.tensor([self._value[b] for b in branches], dtype=torch.float32)
        return ScoredSteps(effective, q.branch, values, q.counts)
