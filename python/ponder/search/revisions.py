"""Sequential revisions (compute-optimal scaling paper, section 6): chains of attempts, each seeing the last ones.

A budget of ``chains * length`` attempts per question is split into ``chains``
independent chains of ``length`` sequential attempts. Attempt ``i`` of a chain is a
full solution sampled from the policy prompted with ``revision_prompt(question,
previous)``, where ``previous`` holds up to the last ``max_context`` (default four)
earlier attempts of the same chain, oldest first; the first attempt sees none. All
chains of all questions advance together: one batch per round of attempts. Every
attempt is scored by the verifier against the question alone.

Selection:

* ``hierarchical`` (the paper's): within each chain, weighted best-of-N over its
  attempts picks the chain's answer and solution; across chains, weighted best-of-N over
  the chains' picks, each weighing the score of its chosen solution;
* ``majority``: a majority vote over every attempt of every chain.

Generations: ``chains * length`` per question.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ponder.search.engine import AnswerOf, SearchResult, SearchRun
from ponder.search.policy import Branch, Policy, Sampling
from ponder.search.verifier import Verifier

__all__ = ["revisions", "default_revision_prompt"]

SELECTIONS = ("hierarchical", "majority")


def default_revision_prompt(question: str, previous: Sequence[str]) -> str:
    """The question, then the earlier attempts as "Attempt i:" blocks (the policy's template wraps it)."""
    attempts = "".join(f"Attempt {i + 1}:\n{text}\n" for i, text in enumerate(previous))
    return f"{attempts}{question}" if attempts else question


def revisions(policy: Policy, verifier: Verifier, questions: Sequence[str], *, answer_of: AnswerOf, chains: int = 4,
              length: int = 4, max_context: int = 4,
              revision_prompt: Callable[[str, Sequence[str]], str] = default_revision_prompt,
              selection: str = "hierarchical", sampling: Sampling = Sampling(), seed: int = 0,
              progress: bool | None = None) -> SearchResult:
    """Sequential revisions (see the module docstring)."""
    if chains < 1 or length < 1 or max_context < 0:
        raise ValueError(f"chains and length must be >= 1 and max_context >= 0, got chains={chains}, "
                         f"length={length}, max_context={max_context}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    run = SearchRun(policy, verifier, answer_of, seed=seed, method="revisions", progress=progress)
    with run.running():
        owners = [q for q in range(len(questions)) for _ in range(chains)]  # chain c of question q: q * chains + c
        history: list[list[tuple[Branch, float]]] = [[] for _ in owners]
        for round_ in range(length):
            contexts = [revision_prompt(questions[q], [b.text for b, _ in history[i][-max_context:]] if max_context
                                        else []) for i, q in enumerate(owners)]
            roots = run.start(questions, contexts, owners)
            firsts = run.expand(roots, 1, sampling)
            for root in roots:
                run.drop(root, "kept")
            ends = run.advance([group[0] for group in firsts], sampling)
            for i, (end, score) in enumerate(zip(ends, run.score(ends).tolist())):
                history[i].append((end, score))
                run.drop(end)
            run.tick(round_ + 1, length)
        run.spend.generations += chains * length * len(questions)
        everything = [[a for c in range(chains) for a in history[q * chains + c]] for q in range(len(questions))]
        config = {"chains": chains, "length": length, "max_context": max_context, "selection": selection,
                  "seed": seed, "sampling": vars(sampling)}
        if selection == "majority":
            return run.result("revisions", everything, "majority", config)
        picks = run.vote(history, "weighted")  # the best attempt of each chain
        winners = [[(history[i][p][0], history[i][p][1]) for i in range(q * chains, (q + 1) * chains)
                    for p, _ in [picks[i]] if p >= 0] for q in range(len(questions))]
        return run.result("revisions", winners, "weighted", config, candidates=everything)
