"""The bookkeeping every search method shares: policy and verifier in lockstep, the tree, the spend.

A :class:`SearchRun` wraps one call of a method. Its operations are the methods'
vocabulary, each one batched call underneath:

* :meth:`SearchRun.start`: a root per question, in the policy and the verifier;
* :meth:`SearchRun.expand`: ``k`` children of each branch (policy expand, verifier fork);
  :meth:`SearchRun.first_steps` starts the questions and expands the roots;
* :meth:`SearchRun.score`: the verifier's value of each branch;
* :meth:`SearchRun.drop`: free a branch in both (pruned, finished with, or a roll-out);
* :meth:`SearchRun.result`: select an answer per prompt from its candidates.

Every branch the run creates is freed by :meth:`SearchRun.close` (also on error), so
the policy's and the PRM's KV pools end as they started.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Iterator, Sequence

import torch

from ponder import ops
from ponder.search.budget import Spend
from ponder.search.policy import Branch, Policy, Sampling
from ponder.search.progress import Progress
from ponder.search.tree import SearchTree
from ponder.search.verifier import Verifier

__all__ = ["Candidate", "PromptResult", "SearchResult", "SearchRun", "SELECTIONS", "vote"]

SELECTIONS = ("max", "weighted", "majority")
AnswerOf = Callable[[Branch], Hashable | None]


@dataclass
class Candidate:
    """A solution the search ended with."""

    uid: int
    steps: list[str]
    answer: Hashable | None
    score: float
    finished: bool

    @property
    def text(self) -> str:
        return "\n".join(self.steps)


@dataclass
class PromptResult:
    """One prompt's outcome: the selected answer and solution, and every candidate with its score."""

    question: str
    answer: Hashable | None
    solution: Candidate | None
    candidates: list[Candidate]
    weight: float  # the winning score, score sum or vote count


@dataclass
class SearchResult:
    """What a search method returns, for all its prompts."""

    method: str
    results: list[PromptResult]
    tree: SearchTree
    spend: Spend
    config: dict = field(default_factory=dict)

    @property
    def answers(self) -> list[Hashable | None]:
        return [r.answer for r in self.results]

    def export_verified(self, path: str | Path, is_correct: Callable[[int, Candidate], bool]) -> int:
        """Append every finished candidate that ``is_correct(prompt_index, candidate)`` accepts to a JSONL file.

        One line per solution, ``{"question", "solution", "answer", "score"}``: training
        data for rejection-sampling fine-tuning (STaR / ReST-EM). Returns the lines written.
        """
        written = 0
        with open(path, "a") as f:
            for p, result in enumerate(self.results):
                for c in result.candidates:
                    if c.finished and is_correct(p, c):
                        f.write(json.dumps({"question": result.question, "solution": c.text,
                                            "answer": c.answer, "score": c.score}) + "\n")
                        written += 1
        return written

    def reselect(self, selection: str) -> list[Hashable | None]:
        """Each prompt's answer had its candidates been selected by ``selection`` instead
        (``max``, ``weighted`` or ``majority``; see :func:`vote`): best-of-N's three
        selections from one set of samples."""
        picks = vote([[(c.answer if c.finished else None, c.score) for c in r.candidates] for r in self.results],
                     selection)
        return [None if pick < 0 else r.candidates[pick].answer for (pick, _), r in zip(picks, self.results)]

    def to_dict(self) -> dict:
        return {"method": self.method, "config": self.config, "spend": self.spend.to_dict(),
                "results": [{"question": r.question, "answer": r.answer, "weight": r.weight,
                             "solution": None if r.solution is None else r.solution.text,
                             "candidates": [{"uid": c.uid, "text": c.text, "answer": c.answer, "score": c.score,
                                             "finished": c.finished} for c in r.candidates]}
                            for r in self.results],
                "tree": self.tree.to_dict()}


def vote(groups: Sequence[Sequence[tuple[Hashable | None, float]]], selection: str) -> list[tuple[int, float]]:
    """Per group of (answer, score) candidates: (the index of the selected one or -1, the winning weight).

    ``selection``: ``max`` (the best-scored candidate), ``weighted`` (the answer with
    the largest score sum) or ``majority`` (the most frequent answer); a candidate
    whose answer is None takes no part. One :func:`ponder.ops.vote` call for all groups.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    ids: dict[Hashable, int] = {}
    answers, scores, offsets = [], [], [0]
    for group in groups:
        for answer, score in group:
            answers.append(-1 if answer is None else ids.setdefault(answer, len(ids)))
            scores.append(score)
        offsets.append(offsets[-1] + len(group))
    result = ops.vote(torch.tensor(answers, dtype=torch.int64), torch.tensor(scores, dtype=torch.float32),
                      torch.tensor(offsets, dtype=torch.int64), method=selection)
    return [(-1 if int(w) < 0 else int(w) - offsets[g], float(weight))
            for g, (w, weight) in enumerate(zip(result.winner.tolist(), result.weight.tolist()))]


class SearchRun:
    """One method call over many prompts: see the module docstring."""

    def __init__(self, policy: Policy, verifier: Verifier, answer_of: AnswerOf, *, seed: int = 0,
                 method: str = "search", progress: bool | None = None):
        self.policy, self.verifier, self.answer_of, self.seed = policy, verifier, answer_of, seed
        self.progress = Progress(method, progress)
        self.tree = SearchTree()
        self.spend = Spend()
        self._live: dict[int, Branch] = {}
        self._round = 0  # distinct seeds for each expand call
        self.tokens_by_prompt: Counter[int] = Counter()  # tokens sampled for each prompt

    @contextlib.contextmanager
    def running(self) -> Iterator["SearchRun"]:
        """Time the run, and free whatever is still live when it ends (normally or not)."""
        try:
            with self.spend.wall():
                yield self
        finally:
            self.close()
            self.progress.close()

    def tick(self, done: int, total: int | None) -> None:
        """Report a finished round to the progress line."""
        self.progress.update(done, total, tokens=self.spend.generated_tokens, live=len(self._live))

    def close(self) -> None:
        for branch in list(self._live.values()):
            self.drop(branch)

    def start(self, questions: Sequence[str], contexts: Sequence[str] | None = None,
              owners: Sequence[int] | None = None) -> list[Branch]:
        """A root per question; or, with ``contexts``, a root per context, answering question ``owners[i]``.

        A context is what the policy is prompted with instead of the bare question (e.g.
        the question with earlier attempts, for revisions); the verifier always sees the
        question.
        """
        self.questions = list(questions)
        if contexts is None:
            contexts, owners = self.questions, list(range(len(self.questions)))
        roots = self.policy.start(list(contexts), self.spend, owners)
        for root in roots:
            self._live[root.uid] = root
            self.tree.add(root.uid, None, root.prompt, self.questions[root.prompt])
        self.verifier.attach(roots, [self.questions[r.prompt] for r in roots], self.spend)
        return roots

    def first_steps(self, questions: Sequence[str], n: int, sampling: Sampling) -> list[list[Branch]]:
        """Start the questions and sample ``n`` first steps of each; the roots are freed."""
        roots = self.start(questions)
        firsts = self.expand(roots, n, sampling)
        for root in roots:
            self.drop(root, "kept")
        return firsts

    def expand(self, branches: Sequence[Branch], k: int | Sequence[int], sampling: Sampling, *,
               status: str = "open") -> list[list[Branch]]:
        """``k`` children of each branch, one step longer; the verifier follows."""
        self._round += 1
        groups = self.policy.expand(branches, k, sampling, hash((self.seed, self._round)) & (2**63 - 1), self.spend)
        out = []
        for parent, steps in zip(branches, groups):
            children = [s.branch for s in steps]
            self.verifier.fork(parent, children)
            for step in steps:
                child = step.branch
                self.tokens_by_prompt[child.prompt] += step.num_tokens
                self._live[child.uid] = child
                node = self.tree.add(child.uid, parent.uid, child.prompt, step.text, finished=child.finished,
                                     status=status)
                if child.finished:
                    answer = self.answer_of(child)
                    node.answer = None if answer is None else str(answer)
            out.append(children)
        return out

    def advance(self, branches: Sequence[Branch], sampling: Sampling, max_steps: int | None = None, *,
                rollout: bool = False) -> list[Branch]:
        """Extend each branch step by step, all in one batch, until finished (or after ``max_steps`` steps).

        Returns the last branch of each chain. Without ``rollout`` each extended branch
        is freed as ``kept`` along the way; with it the given branches stay live (they are
        candidates being evaluated) and every branch made is a roll-out, for the caller
        to score and drop.
        """
        chains = list(branches)
        live = [i for i, b in enumerate(chains) if not b.finished]
        steps = 0
        while live and (max_steps is None or steps < max_steps):
            nexts = self.expand([chains[i] for i in live], 1, sampling, status="rollout" if rollout else "open")
            for i, (child,) in zip(live, nexts):
                if not (rollout and chains[i] is branches[i]):
                    self.drop(chains[i], None if rollout else "kept")
                chains[i] = child
            live = [i for i in live if not chains[i].finished]
            steps += 1
            self.tick(steps, max_steps)
        return chains

    def score(self, branches: Sequence[Branch]) -> torch.Tensor:
        """float32 [S]: the verifier's value of each branch (recorded in the tree)."""
        if not branches:
            return torch.empty(0)
        values = self.verifier.score(branches, self.spend)
        for branch, value in zip(branches, values.tolist()):
            self.tree.nodes[branch.uid].score = value
        return values

    def drop(self, branch: Branch, status: str | None = None) -> None:
        """Free ``branch`` in the policy and the verifier, and set its status in the tree if given.

        A branch already freed (a finished one) is not freed again: only its status changes.
        """
        if status is not None:
            self.tree.nodes[branch.uid].status = status
        if self._live.pop(branch.uid, None) is not None:
            self.verifier.free(branch)
            self.policy.free(branch)

    def vote(self, groups: Sequence[Sequence[tuple[Branch, float]]], selection: str) -> list[tuple[int, float]]:
        """Per group of (branch, score) candidates: (the index of the selected one or -1, the winning weight).

        See :func:`vote`; an unfinished branch has no answer.
        """
        return vote([[(self.answer_of(branch) if branch.finished else None, score) for branch, score in group]
                     for group in groups], selection)

    def result(self, method: str, finals: Sequence[Sequence[tuple[Branch, float]]], selection: str,
               config: dict, candidates: Sequence[Sequence[tuple[Branch, float]]] | None = None) -> SearchResult:
        """Select each prompt's answer among its final (branch, score) candidates (see :meth:`vote`).

        ``candidates``: what the result lists per prompt, when more than the ``finals``
        voted on (default: the finals).
        """
        picks = self.vote(finals, selection)
        listed = finals if candidates is None else candidates
        results = []
        for g, ((pick, weight), group) in enumerate(zip(picks, finals)):
            mine = []
            for branch, score in listed[g]:
                answer = self.answer_of(branch) if branch.finished else None
                mine.append(Candidate(branch.uid, list(branch.steps), answer, score, branch.finished))
                self.tree.nodes[branch.uid].status = "final"
            chosen = None if pick < 0 else group[pick][0]
            solution = None if chosen is None else next(c for c in mine if c.uid == chosen.uid)
            if solution is not None:
                for node in self.tree.path(solution.uid):
                    node.status = "chosen"
            results.append(PromptResult(self.questions[g], None if solution is None else solution.answer, solution,
                                        mine, weight))
        return SearchResult(method, results, self.tree, self.spend, config)
