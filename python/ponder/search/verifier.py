"""The verifier protocol and its implementations: PRM, progress (PAV), answer checker, Monte-Carlo roll-outs
(their value, and a PAV read from them).

A verifier scores many partial solutions at once. It follows the policy's tree: roots
are attached when a search starts, children when a branch is expanded, and a pruned
branch is freed. :meth:`Verifier.score` reads each branch's steps that it has not seen
yet and returns the branch's value after them, float32 [S] (higher is better).
"""

from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence

import torch

from ponder.prm import IncrementalScorer, ProgressScorer
from ponder.search.budget import Spend
from ponder.search.policy import Branch, ModelPolicy, Sampling

__all__ = ["Verifier", "PRMVerifier", "CheckerVerifier", "MonteCarloVerifier", "MonteCarloProgressVerifier",
           "best_of_value"]

Checker = Callable[[int, Branch], bool]
"""``checker(prompt_index, branch)``: whether a finished branch's final answer is right."""


def best_of_value(right: int, rollouts: int, best_of: int) -> float:
    """The best-of-``best_of`` policy's value from ``right`` of ``rollouts`` roll-outs right,
    without bias: ``1 - C(R - c, K) / C(R, K)`` (``best_of=1`` gives ``c / R``)."""
    if not 1 <= best_of <= rollouts:
        raise ValueError(f"best_of must be in 1..{rollouts} (the roll-outs it is estimated from), got {best_of}")
    if not 0 <= right <= rollouts:
        raise ValueError(f"right must be in 0..{rollouts}, got {right}")
    return 1.0 - math.comb(rollouts - right, best_of) / math.comb(rollouts, best_of)


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


class MonteCarloProgressVerifier(MonteCarloVerifier):
    """A process advantage verifier read from roll-outs: ``Q + alpha * A_mu`` without trained PRMs.

    ``Q`` is :class:`MonteCarloVerifier`'s value (``c`` of ``k`` roll-outs right), and the
    prover ``mu`` is the best-of-``best_of`` policy (Setlur et al. 2024's BoK prover), whose
    value the same roll-outs estimate without bias (:func:`best_of_value`). A branch's
    advantage is ``V_mu`` after its steps minus ``V_mu`` at its last scored ancestor (the
    prompt, rolled out when attached). A finished branch's ``Q`` and ``V_mu`` are the
    checker's verdict.

    Searching against it and against :class:`MonteCarloVerifier` compares the PAV with the
    PRM when neither is a trained model's approximation. Since ``V_mu`` is an increasing
    function of ``c``, it ranks the children of one parent as ``Q`` does; only the ranking
    across parents can change.
    """

    def __init__(self, policy: ModelPolicy, checker: Checker, k: int = 8, best_of: int = 4, alpha: float = 1.0,
                 sampling: Sampling = Sampling(), seed: int = 0):
        super().__init__(policy, checker, k, sampling, seed)
        best_of_value(0, k, best_of)  # checks best_of against k
        if not math.isfinite(alpha):
            raise ValueError(f"alpha must be finite, got {alpha}")
        self.best_of, self.alpha = best_of, float(alpha)
        self._prover_value: dict[int, float] = {}  # branch uid -> V_mu after its steps, once scored
        self._before: dict[int, float] = {}  # branch uid -> V_mu at its last scored ancestor

    def attach(self, roots: Sequence[Branch], questions: Sequence[str], spend: Spend) -> None:
        values = super().score(roots, spend)
        for root, value in zip(roots, values.tolist()):
            self._prover_value[root.uid] = self._before[root.uid] = self._value_of(root, value)

    def fork(self, parent: Branch, children: Sequence[Branch]) -> None:
        # A parent that was scored passes its own value down; one that was not (a search may
        # expand before it scores) passes what its advantage would have been measured from.
        before = self._prover_value[parent.uid] if parent.uid in self._prover_value else self._before_of(parent)
        for child in children:
            self._before[child.uid] = before

    def free(self, branch: Branch) -> None:
        self._prover_value.pop(branch.uid, None)
        self._before.pop(branch.uid, None)

    def score(self, branches: Sequence[Branch], spend: Spend) -> torch.Tensor:
        befores = [self._before_of(b) for b in branches]
        q = super().score(branches, spend)
        effective = torch.empty_like(q)
        for i, (branch, value, before) in enumerate(zip(branches, q.tolist(), befores)):
            after = self._prover_value[branch.uid] = self._value_of(branch, value)
            effective[i] = value + self.alpha * (after - before)
        return effective

    def _value_of(self, branch: Branch, q: float) -> float:
        return q if branch.finished else best_of_value(round(q * self.k), self.k, self.best_of)

    def _before_of(self, branch: Branch) -> float:
        if branch.uid not in self._before:
            raise ValueError(f"branch {branch.uid} was not attached or forked through this verifier (or was freed)")
        return self._before[branch.uid]
