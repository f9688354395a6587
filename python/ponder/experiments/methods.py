"""The search methods at a generation budget, as the compute-optimal scaling paper compares them.

A budget is counted in *generations* (the paper's unit): best-of-N, beam search and
DVTS spend ``N``; lookahead search with ``k`` roll-out steps spends ``N * (k + 1)``;
MCTS counts the steps it samples in units of a solution's mean number of steps
(:mod:`ponder.search.mcts`), which is known only afterwards, so it is given a token
budget instead: ``budget`` times the tokens of a typical solution
(``tokens_per_generation``), spent in iterations of ``k = 2`` children with UCT's
``c = 0.1``; the results report what it actually spent. :data:`METHODS` names each
configuration; :func:`run_method` runs one on a batch of questions.

The three best-of-N rows are one set of samples selected three ways
(:meth:`~ponder.search.SearchResult.reselect`), so they share their spend.

:data:`REVISION_METHODS` are sequential revisions (:func:`~ponder.search.revisions`)
with a revision model as the policy, the budget split three ways between parallel
chains and sequential attempts (:func:`revision_split`): all parallel, all
sequential, and balanced in between. :data:`REVISION_SWEEP` holds the other splits
between the two ends, chains of 2, 4, ..., 32 attempts, for the paper's sweep of the
sequential/parallel ratio (its figure 7).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from ponder.search import (Policy, SearchResult, Verifier, beam_search, best_of_n, dvts, lookahead_search,
                           mcts, revisions, Sampling)

__all__ = ["METHODS", "REVISION_METHODS", "REVISION_SWEEP", "BEAM_WIDTH", "LOOKAHEAD_STEPS", "MethodRun",
           "run_method", "feasible", "revision_split", "uses_revision_model"]

BEAM_WIDTH = 4          # M: children per kept beam (beam, lookahead, DVTS)
LOOKAHEAD_STEPS = 1     # k of lookahead search
# MCTS's k and UCT constant, chosen on 60 validation problems among k in {2, 3, 4}, c in
# {1, 0.3, 0.1, 0.03}, UCT and PUCT: with 4 children and c = 1 the tree grew in breadth and
# finished few solutions (0.15 / 0.43 / 0.60 at 4 / 16 / 64 against 0.58 / 0.72 / 0.72).
# Two children per node make a small tree that is often exhausted early, so MCTS spends
# less than large budgets allow; the results report what it spent. Progressive widening
# (one child a node, widening 0.5) spends the budget but is no more accurate there
# (0.60 / 0.72 / 0.73 at 4.2 / 12.7 / 43.5 generations), and two children with widening
# are less accurate (0.30 / 0.53 / 0.53), so the demo does not widen.
MCTS_CHILDREN = 2
MCTS_C = 0.1
MCTS_ITERATIONS_PER_GENERATION = 4  # a cap only: the token budget ends MCTS first
METHODS = ("best_of_n_max", "best_of_n_weighted", "majority", "beam_search", "lookahead", "mcts", "dvts")
"""Every configuration, in the order tables list them."""
REVISION_METHODS = ("revisions_parallel", "revisions_balanced", "revisions_sequential")
"""Sequential revisions at three splits of the budget (see :func:`revision_split`)."""
REVISION_SWEEP = tuple(f"revisions_length_{length}" for length in (2, 4, 8, 16, 32))
"""``revisions_length_L``: the budget in chains of ``L`` attempts, at least two chains."""


def uses_revision_model(method: str) -> bool:
    """Whether ``method`` samples from the revision model (a split of sequential revisions)."""
    return method in REVISION_METHODS or method in REVISION_SWEEP


def _sweep_length(method: str) -> int:
    return int(method.rsplit("_", 1)[1])


@dataclass
class MethodRun:
    """One method at one budget on a batch of questions.

    answers : the selected answer per question (None: none)
    result : the search's result (shared by the three best-of-N rows)
    """

    method: str
    budget: int
    answers: list[Hashable | None]
    result: SearchResult


def feasible(method: str, budget: int) -> bool:
    """Whether ``method`` can spend exactly ``budget`` generations (lookahead needs ``k + 1``;
    balanced revisions need two attempts or more per chain; ``revisions_length_L`` needs
    two chains of ``L`` or more; MCTS needs :data:`MCTS_CHILDREN` or more, because every
    step down to its first finished solution samples that many children, so a smaller
    budget ends before any solution is finished)."""
    if method == "lookahead":
        return budget % (LOOKAHEAD_STEPS + 1) == 0
    if method == "mcts":
        return budget >= MCTS_CHILDREN
    if method == "revisions_balanced":
        return budget >= 2
    if method in REVISION_SWEEP:
        length = _sweep_length(method)
        return budget % length == 0 and budget >= 2 * length
    return budget >= 1


def revision_split(method: str, budget: int) -> tuple[int, int]:
    """(chains, attempts per chain) of a revision method at ``budget``: ``(budget, 1)`` for
    ``revisions_parallel``, ``(1, budget)`` for ``revisions_sequential``, and for
    ``revisions_balanced`` the chain length the power of two nearest the square root
    of the budget (at least 2; rounded down where it does not divide the budget);
    ``(budget // L, L)`` for ``revisions_length_L``."""
    if method == "revisions_parallel":
        return budget, 1
    if method == "revisions_sequential":
        return 1, budget
    if method in REVISION_SWEEP:
        return budget // _sweep_length(method), _sweep_length(method)
    if method != "revisions_balanced":
        raise ValueError(f"unknown revision method {method!r}: expected one of {REVISION_METHODS + REVISION_SWEEP}")
    length = max(2, 2 ** round(math.log2(budget) / 2))
    while budget % length:
        length //= 2
    return budget // length, length


def _beams(n: int) -> tuple[int, int]:
    """(n, width) for ``n`` beams: the width is the largest divisor of ``n`` up to :data:`BEAM_WIDTH`."""
    return n, max(w for w in range(1, min(BEAM_WIDTH, n) + 1) if n % w == 0)


def run_method(method: str, budget: int, policy: Policy, verifier: Verifier, questions: Sequence[str], *,
               answer_of, seed: int = 0, sampling: Sampling = Sampling(), progress: bool | None = None,
               tokens_per_generation: int | None = None,
               best_of_n_result: SearchResult | None = None) -> MethodRun:
    """Run ``method`` (a name in :data:`METHODS`, :data:`REVISION_METHODS` or :data:`REVISION_SWEEP`) at
    ``budget`` generations per question.

    ``tokens_per_generation``: the tokens of a typical whole solution (MCTS's token
    budget is ``budget`` times it; required for MCTS). ``best_of_n_result``: a
    best-of-N run at this budget to select from again instead of sampling anew (the
    three best-of-N rows share one).
    """
    if method not in METHODS and not uses_revision_model(method):
        raise ValueError(f"unknown method {method!r}: expected one of {METHODS + REVISION_METHODS + REVISION_SWEEP}")
    if not feasible(method, budget):
        raise ValueError(f"{method} cannot spend {budget} generations (lookahead needs a multiple of "
                         f"{LOOKAHEAD_STEPS + 1}, balanced revisions at least 2, revisions_length_L a multiple "
                         f"of L of at least 2L, MCTS at least {MCTS_CHILDREN})")
    common = dict(answer_of=answer_of, seed=seed, sampling=sampling, progress=progress)
    if method in ("best_of_n_max", "best_of_n_weighted", "majority"):
        result = best_of_n_result or best_of_n(policy, verifier, questions, budget, selection="weighted", **common)
        selection = {"best_of_n_max": "max", "best_of_n_weighted": "weighted", "majority": "majority"}[method]
        return MethodRun(method, budget, result.reselect(selection), result)
    if method == "beam_search":
        n, width = _beams(budget)
        result = beam_search(policy, verifier, questions, n, width, **common)
    elif method == "lookahead":
        n, width = _beams(budget // (LOOKAHEAD_STEPS + 1))
        result = lookahead_search(policy, verifier, questions, n, width, LOOKAHEAD_STEPS, **common)
    elif method == "dvts":
        n, width = _beams(budget)
        result = dvts(policy, verifier, questions, n, width, **common)
    elif uses_revision_model(method):
        chains, length = revision_split(method, budget)
        result = revisions(policy, verifier, questions, chains=chains, length=length, **common)
    else:
        if tokens_per_generation is None or tokens_per_generation < 1:
            raise ValueError(f"MCTS needs tokens_per_generation >= 1 to turn {budget} generations into tokens, "
                             f"got {tokens_per_generation}")
        result = mcts(policy, verifier, questions, k=MCTS_CHILDREN, c=MCTS_C,
                      iterations=MCTS_ITERATIONS_PER_GENERATION * budget, max_tokens=budget * tokens_per_generation,
                      answer="vote", **common)
    return MethodRun(method, budget, result.answers, result)
