"""Incremental PRM scoring on a forked KV tree: a new step costs only its own tokens.

The scorer keeps one PRM sequence per branch of the search tree in its own
:class:`~ponder.kv.KVCache`, beside the policy's, and mirrors the policy's tree
operations::

    scorer = prm.scorer(max_tokens=65536)
    roots, root_values = scorer.start(questions)      # the prompts, prefilled once
    kids = scorer.fork(roots[0], 4)                   # share every block; no KV bytes move
    out = scorer.extend(kids, ["2 + 3 = 5", ...])     # one batched forward over the new steps
    out.scores, out.values                            # each new step's score; aggregate per branch
    scorer.free(kids[1])                              # a pruned branch

A branch's aggregate (``last``, ``min``, ``prod``, ``mean`` of its step scores) is kept
as a running value and count, so :func:`ponder.ops.step_scores` updates it from the new
steps alone. For a head that reads surprise (:mod:`ponder.prm.surprise`), the branch's
surprise so far is kept the same way, and the forward also returns the LM head's logits
at the new steps' own tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ponder.kv import BlockStateError, KVCache, OutOfBlocks
from ponder.prm.model import PRM, check_aggregate
from ponder.prm.surprise import running_surprise, step_surprise, surprise_tokens

__all__ = ["IncrementalScorer", "ScoredSteps"]


@dataclass
class ScoredSteps:
    """What :meth:`IncrementalScorer.extend` returns, for S branches and the P steps they received.

    Attributes
    ----------
    scores : float32 [P], each new step's score in order (NaN for a step an outcome model does not score)
    branch : int64 [P], the index into the extended branches each step belongs to
    values : float32 [S], each branch's aggregate over all its steps so far (NaN before its first scored step)
    counts : int64 [S], scored steps per branch so far
    """

    scores: torch.Tensor
    branch: torch.Tensor
    values: torch.Tensor
    counts: torch.Tensor


@dataclass
class _Branch:
    value: float  # running aggregate of the scored steps
    count: int  # scored steps
    last: float  # the latest score: the root value before any step
    surprise: float = 0.0  # the least step surprise so far (heads that read surprise)


@dataclass
class _Encoded:
    """New PRM tokens for S branches, packed in order, and which packed rows each step reads."""

    token_lists: list[list[int]]  # per branch, the ids it appends
    rows: list[int]  # per scored step, the packed row of its score
    owner: list[int]  # per step, its branch's index
    scored: list[bool]  # per step, whether it is scored
    surprise_rows: list[int]  # packed rows predicting a token a scored step's surprise reads
    surprise_targets: list[int]  # the token each predicts
    surprise_steps: list[int]  # the scored step (index into ``rows``) each belongs to


class IncrementalScorer:
    """PRM scores of a growing tree of partial solutions, one batched forward per call.

    Parameters
    ----------
    prm : the :class:`~ponder.prm.model.PRM`
    cache : a KV cache made by ``prm.model.new_cache(...)``
    aggregate : ``last`` (default), ``min``, ``prod`` or ``mean``

    Branch ids are the PRM cache's sequence ids. Every call that fails (bad input,
    :class:`~ponder.kv.OutOfBlocks`) leaves the cache and every branch as they were.
    """

    def __init__(self, prm: PRM, cache: KVCache, *, aggregate: str = "last"):
        check_aggregate(aggregate)
        self.prm = prm
        self.cache = cache
        self.aggregate = aggregate
        self._branches: dict[int, _Branch] = {}
        self._freed: set[int] = set()
        self.tokens_processed = 0  # PRM forward tokens, for budget accounting

    def _branch(self, branch: int) -> _Branch:
        state = self._branches.get(branch)
        if state is None:
            raise BlockStateError(f"PRM branch {branch} " + ("was freed" if branch in self._freed
                                                             else "is not a branch of this scorer"))
        return state

    def start(self, questions: Sequence[str]) -> tuple[list[int], torch.Tensor]:
        """One root branch per question, prefilled (cached prompt prefixes are reused).

        Returns
        -------
        (branches, root_values): the new branch ids, and float32 [len(questions)], the
        head's score at each prompt's last token (the value before any step, which
        progress scores measure against).
        """
        prompts = [self.prm.encode_prompt(q) for q in questions]
        if not prompts:
            raise ValueError("start needs at least one question")
        branches, out = self.prm.model.start(self.cache, prompts, hidden=True)
        self.tokens_processed += out.num_tokens
        count = len(branches)
        zeros = torch.zeros(count)
        no_steps = torch.zeros(count, 2) if self.prm.head.reads_surprise else None  # nothing written, no surprise
        roots = self.prm.step_scores(out.hidden, torch.arange(count), zeros, zeros.long(), "last",
                                     no_steps).scores.cpu()
        for branch, value in zip(branches, roots.tolist()):
            self._branches[branch] = _Branch(float("nan"), 0, value)
        return branches, roots

    def fork(self, branch: int, n: int) -> list[int]:
        """``n`` children of ``branch`` with its PRM sequence and aggregate; the parent stays valid."""
        state = self._branch(branch)
        children = self.cache.fork(branch, n)
        for child in children:
            self._branches[child] = _Branch(state.value, state.count, state.last, state.surprise)
        return children

    def free(self, branch: int) -> None:
        """Drop a pruned or finished branch; its blocks no other branch holds go back to the pool."""
        self._branch(branch)
        self.cache.free(branch)
        del self._branches[branch]
        self._freed.add(branch)

    def values(self, branches: Sequence[int]) -> torch.Tensor:
        """float32 [S]: each branch's aggregate score (NaN before its first scored step)."""
        return torch.tensor([self._branch(b).value for b in branches], dtype=torch.float32)

    def last_scores(self, branches: Sequence[int]) -> torch.Tensor:
        """float32 [S]: each branch's latest step score (its root value before any step)."""
        return torch.tensor([self._branch(b).last for b in branches], dtype=torch.float32)

    def _encode(self, branches: list[int], steps, final) -> _Encoded:
        if len(steps) != len(branches):
            raise ValueError(f"{len(branches)} branches but {len(steps)} step entries: expected one per branch")
        final = [True] * len(branches) if final is None else list(final)
        if len(final) != len(branches):
            raise ValueError(f"{len(branches)} branches but {len(final)} final flags")
        out = _Encoded([], [], [], [], [], [], [])
        offset = 0
        for i, entry in enumerate(steps):
            texts = [entry] if isinstance(entry, str) else list(entry)
            if not texts:
                raise ValueError(f"steps[{i}] is empty: expected at least one step per branch")
            ids: list[int] = []
            for j, text in enumerate(texts):
                step = self.prm.encode_step(text)
                is_scored = not self.prm.outcome or (final[i] and j == len(texts) - 1)
                out.owner.append(i)
                out.scored.append(is_scored)
                if is_scored:
                    start = offset + len(ids)
                    for t in surprise_tokens(step.text_length):
                        out.surprise_rows.append(start + t - 1)
                        out.surprise_targets.append(step.ids[t])
                        out.surprise_steps.append(len(out.rows))
                    out.rows.append(start + step.score_at)
                ids += step.ids
            out.token_lists.append(ids)
            offset += len(ids)
        return out

    def check_fits(self, branches: Sequence[int], steps: Sequence[str | Sequence[str]],
                   final: Sequence[bool] | None = None) -> None:
        """Raise OutOfBlocks if :meth:`extend` with these arguments would not fit in the cache; change nothing."""
        branches = list(branches)
        for b in branches:
            self._branch(b)
        token_lists = self._encode(branches, steps, final).token_lists
        needed = self.cache.blocks_needed(branches, [len(t) for t in token_lists])
        if needed > self.cache.pool.available():
            raise OutOfBlocks(f"extending these PRM branches needs {needed} new blocks but only "
                              f"{self.cache.pool.available()} are available; free pruned branches or make the "
                              "scorer's cache larger")

    def extend(self, branches: Sequence[int], steps: Sequence[str | Sequence[str]],
               final: Sequence[bool] | None = None) -> ScoredSteps:
        """Append steps to branches and score them, in one batched PRM forward.

        Parameters
        ----------
        branches : S distinct live branch ids
        steps : per branch, one step (str) or several (a list of str, in order)
        final : per branch, whether its last new step ends the solution; an outcome model
            scores only those (default: all final)

        Returns
        -------
        :class:`ScoredSteps`
        """
        branches = list(branches)
        states = [self._branch(b) for b in branches]
        encoded = self._encode(branches, steps, final)
        owner, scored = encoded.owner, encoded.scored
        reads_surprise = self.prm.head.reads_surprise
        out = self.prm.model.step(self.cache, branches, encoded.token_lists,
                                  logit_rows=encoded.surprise_rows if reads_surprise else [],
                                  hidden_rows=encoded.rows)
        self.tokens_processed += out.num_tokens
        solution = torch.tensor([o for o, s in zip(owner, scored) if s], dtype=torch.int64)
        prior_value = torch.tensor([s.value if s.count else 0.0 for s in states], dtype=torch.float32)
        prior_count = torch.tensor([s.count for s in states], dtype=torch.int64)
        surprise = None
        if reads_surprise:
            each = step_surprise(out.logits, torch.tensor(encoded.surprise_targets, dtype=torch.int64),
                                 torch.tensor(encoded.surprise_steps, dtype=torch.int64), len(encoded.rows))
            surprise = running_surprise(each, solution, torch.tensor([s.surprise for s in states]))
        result = self.prm.step_scores(out.hidden, solution, prior_value, prior_count, self.aggregate, surprise)

        scores = torch.full((len(owner),), float("nan"))
        scores[torch.tensor(scored, dtype=torch.bool)] = result.scores.cpu()
        values, counts = result.value.cpu(), result.count.cpu()
        for i, state in enumerate(states):
            state.count = int(counts[i])
            state.value = float(values[i]) if state.count else float("nan")
        for i, is_scored, score in zip(owner, scored, scores.tolist()):
            if is_scored:
                states[i].last = score
        if surprise is not None:
            for i, so_far in zip(solution.tolist(), surprise[:, 1].tolist()):  # steps in order: the last one stays
                states[i].surprise = so_far
        return ScoredSteps(scores, torch.tensor(owner, dtype=torch.int64),
                           torch.tensor([s.value for s in states], dtype=torch.float32), counts)

    def tokens(self, branch: int) -> list[int]:
        """The PRM token ids branch ``branch`` holds."""
        self._branch(branch)
        return self.cache.tokens(branch)
