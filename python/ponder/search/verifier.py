"""The verifier protocol and its implementations: PRM, progress (PAV), answer checker, Monte-Carlo roll-outs.

A verifier scores many partial solutions at once. It follows the policy's tree: roots
are attached when a search starts, children when a branch is expanded, and a pruned
branch is freed. :meth:`Verifier.score` reads each branch's steps that it has not seen
yet and returns the branch's value after them, float32 [S] (higher is better).
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch

from ponder.prm import IncrementalScorer, ProgressScorer
from ponder.search.budget import Spend
from ponder.search.policy import Branch, ModelPolicy, Sampling

__all__ = ["Verifier", "PRMVerifier", "CheckerVerifier", "MonteCarloVerifier"]

Checker = Callable[[int, Branch], bool]
"""``checker(prompt_index, branch)``: whether a finished branch's final answer is right."""


class Verifier(Protocol):
    def attach(self, roots: Sequence[Branch], questions: Sequence[str], spend: Spend) -> None:
        """Start tracking the root branch of each question."""

    def fork(self, parent: Branch, children: Sequence[Branch]) -> None:
        """Children of ``parent`` (which the policy made by expanding it) start from its state."""

    def free(self, branch: Branch) -> None:
        """Stop tracking ``branch``."""

    def score(self, branches: Sequence[Branch], spend: Spend) -> torch.Tensor:
        """float32 [S]: each branch's value after all its steps."""


class PRMVerifier:
    """Scores with an incremental PRM (or a :class:`~ponder.prm.ProgressScorer` for PAV's ``Q + alpha * A``).

    The PRM's KV tree is forked and freed with the policy's, so each new step costs only
    its own tokens. A branch's value is the scorer's aggregate (``last``, ``min``,
    ``prod``, ``mean``; the progress scorer: the latest step's ``Q + alpha * A``).
    """

    def __init__(self, scorer: IncrementalScorer | ProgressScorer):
        self.scorer = scorer
        self._state: dict[int, tuple[int, int]] = {}  # branch uid -> (PRM branch, steps seen)

    def attach(self, roots: Sequence[Branch], questions: Sequence[str], spend: Spend) -> None:
        before = self.scorer.tokens_processed
        with spend.phase("prm"):
            prm_roots, _ = self.scorer.start(list(questions))
        spend.prm_tokens += self.scorer.tokens_processed - before
        for root, prm_root in zip(roots, prm_roots):
            self._state[root.uid] = (prm_root, len(root.steps))

    def fork(self, parent: Branch, children: Sequence[Branch]) -> None:
        if not children:
            return
        prm_parent, seen = self._state[parent.uid]
        for child, prm_child in zip(children, self.scorer.fork(prm_parent, len(children))):
            self._state[child.uid] = (prm_child, seen)

    def free(self, branch: Branch) -> None:
        prm_branch, _ = self._state.pop(branch.uid)
        self.scorer.free(prm_branch)

    def score(self, branches: Sequence[Branch], spend: Spend) -> torch.Tensor:
        pending = [b for b in branches if len(b.steps) > self._state[b.uid][1]]
        if pending:
            before = self.scorer.tokens_processed
            with spend.phase("prm"):
                self.scorer.extend([self._state[b.uid][0] for b in pending],
                                   [b.steps[self._state[b.uid][1]:] for b in pending], [b.finished for b in pending])
            spend.prm_tokens += self.scorer.tokens_processed - before
            for b in pending:
                self._state[b.uid] = (self._state[b.uid][0], len(b.steps))
        return self.scorer.values([self._state[b.uid][0] for b in branches])


class CheckerVerifier:
    """A rule-based judge of final answers: 1 for a finished branch the checker accepts, else 0."""

    def __init__(self, checker: Checker):
        self.checker = checker

    def attach(self, roots, questions, spend) -> None:
        pass

    def fork(self, parent, children) -> None:
        pass

    def free(self, branch) -> None:
        pass

    def score(self, branches: Sequence[Branch], spend: Spend) -> torch.Tensor:
        return torch.tensor([float(b.finished and self.checker(b.prompt, b)) for b in branches], dtype=torch.float32)


class MonteCarloVerifier(CheckerVerifier):
    """The Monte-Carlo value of a step: the fraction of ``k`` sampled completions the checker accepts.

    Each unfinished branch is forked ``k`` times in the policy and rolled out to the end
    with ``sampling``; the roll-outs are freed after counting. A finished branch scores
    as the checker says (1 or 0). Roll-out tokens are counted in ``spend``.
    """

    def __init__(self, policy: ModelPolicy, checker: Checker, k: int = 4, sampling: Sampling = Sampling(),
                 seed: int = 0):
        super().__init__(checker)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.policy, self.k, self.sampling, self.seed = policy, k, sampling, seed

    def score(self, branches: Sequence[Branch], spend: Spend) -> torch.Tensor:
        values = super().score(branches, spend)
        todo = [i for i, b in enumerate(branches) if not b.finished]
        if not todo:
            return values
        groups = self.policy.expand([branches[i] for i in todo], self.k, self.sampling, self.seed, spend)
        rollouts = [step.branch for group in groups for step in group]
        owner = [i for i, group in zip(todo, groups) for _ in group]
        live = [j for j, r in enumerate(rollouts) if not r.finished]
        while live:  # one step of every unfinished roll-out at a time, in one batch
            nexts = self.policy.expand([rollouts[j] for j in live], 1, self.sampling, self.seed, spend)
            for j, (new,) in zip(live, nexts):
                self.policy.free(rollouts[j])
                rollouts[j] = new.branch
            live = [j for j in live if not rollouts[j].finished]
        accepted = torch.zeros(len(branches))
        for i, rollout in zip(owner, rollouts):
            accepted[i] += float(self.checker(rollout.prompt, rollout))
            self.policy.free(rollout)
        for i in todo:
            values[i] = accepted[i] / self.k
        return values
