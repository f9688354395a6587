"""Diverse verifier tree search (DVTS): ``n / m`` independent greedy subtrees per prompt.

Each subtree starts at the prompt, samples ``m`` candidate steps, keeps the single best
by the verifier and expands it again, until its beam finishes or ``max_steps`` rounds;
subtrees never compete, which keeps the final ``n / m`` candidates diverse. The answer is
selected among the subtrees' final beams. Generations: ``n`` per prompt.
"""

from __future__ import annotations

from typing import Sequence

from ponder.search.beam import rank
from ponder.search.engine import AnswerOf, SearchResult, SearchRun
from ponder.search.policy import Branch, Policy, Sampling
from ponder.search.verifier import Verifier

__all__ = ["dvts"]


def dvts(policy: Policy, verifier: Verifier, questions: Sequence[str], n: int = 16, width: int = 4, *,
         answer_of: AnswerOf, max_steps: int = 40, selection: str = "weighted", sampling: Sampling = Sampling(),
         seed: int = 0, progress: bool | None = None) -> SearchResult:
    """DVTS with ``n // width`` subtrees of beam width ``width`` per question (see the module docstring)."""
    if n < 1 or width < 1 or n % width:
        raise ValueError(f"n ({n}) must be a positive multiple of the beam width ({width})")
    subtrees = n // width
    run = SearchRun(policy, verifier, answer_of, seed=seed, method="dvts", progress=progress)
    with run.running():
        roots = run.start(questions)
        # Each subtree's beam; all subtrees of a prompt start at its root.
        beams: list[tuple[int, Branch]] = [(p, root) for p, root in enumerate(roots) for _ in range(subtrees)]
        finals: list[list[tuple[Branch, float]]] = [[] for _ in questions]
        for depth in range(max_steps):
            parents = [b for _, b in beams]
            groups = run.expand(parents, width, sampling)
            for parent in dict.fromkeys(parents):  # a root is the parent of all its subtrees at first
                run.drop(parent, "kept")
            scores = iter(run.score([c for group in groups for c in group]).tolist())
            next_beams = []
            for (p, _), children in zip(beams, groups):
                child_scores = [next(scores) for _ in children]
                best, *rest = rank(child_scores)
                for i in rest:
                    run.drop(children[i], "pruned")
                if children[best].finished or depth == max_steps - 1:
                    finals[p].append((children[best], child_scores[best]))
                    run.drop(children[best])
                else:
                    next_beams.append((p, children[best]))
            beams = next_beams
            run.tick(depth + 1, max_steps)
            if not beams:
                break
        run.spend.generations += n * len(questions)
        return run.result("dvts", finals, selection, {"n": n, "width": width, "max_steps": max_steps,
                                                      "selection": selection, "seed": seed,
                                                      "sampling": vars(sampling)})
