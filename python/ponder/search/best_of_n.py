"""Best-of-N: N independent full solutions per prompt, one selected by the verifier or by vote."""

from __future__ import annotations

from typing import Sequence

from ponder.search.engine import AnswerOf, SearchResult, SearchRun
from ponder.search.policy import Policy, Sampling
from ponder.search.verifier import Verifier

__all__ = ["best_of_n"]


def best_of_n(policy: Policy, verifier: Verifier, questions: Sequence[str], n: int, *, answer_of: AnswerOf,
              selection: str = "weighted", sampling: Sampling = Sampling(), seed: int = 0,
              progress: bool | None = None) -> SearchResult:
    """Sample ``n`` solutions per question to the end, score each, select an answer.

    Parameters
    ----------
    policy, verifier : see :mod:`ponder.search.policy` and :mod:`ponder.search.verifier`
    questions : the prompts, searched together in one batch
    n : solutions per question
    answer_of : a finished branch's final answer (hashable), or None when it has none
    selection : ``max`` (verifier best-of-N), ``weighted`` (weighted best-of-N: score sum
        per answer) or ``majority`` (majority vote, scores ignored)
    sampling : sampling of every step
    seed : the run's randomness
    progress : show a progress line on stderr (default: when stderr is a terminal)

    The verifier scores each solution once, at its end, over all its steps (for a PRM:
    one forward over every new token). Generations: ``n`` per question.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    run = SearchRun(policy, verifier, answer_of, seed=seed, method="best_of_n", progress=progress)
    with run.running():
        firsts = run.first_steps(questions, n, sampling)
        ends = run.advance([b for group in firsts for b in group], sampling)
        scores = run.score(ends).tolist()
        run.spend.generations += n * len(questions)
        finals = [list(zip(ends[p * n:(p + 1) * n], scores[p * n:(p + 1) * n])) for p in range(len(questions))]
        return run.result("best_of_n", finals, selection, {"n": n, "selection": selection, "seed": seed,
                                                           "sampling": vars(sampling)})
