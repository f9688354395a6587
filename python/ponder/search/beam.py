"""Beam search against a verifier, and lookahead search (beam search that scores by greedy roll-outs).

As the compute-optimal scaling paper (section 5.2) runs it, for ``n`` beams and beam
width ``m``:

1. sample ``n`` first steps per prompt;
2. score every candidate with the verifier (lookahead: roll it out ``k`` more steps at
   temperature 0, stopping at the end of the solution, and take the verifier's score
   at the end of the roll-out; the roll-outs are then freed);
3. every finished solution becomes a final candidate; of the unfinished candidates keep
   the ``n / m`` best (ties: the earlier candidate), and prune the others;
4. sample ``m`` next steps from each kept candidate, and repeat from 2 until none is
   left or after ``max_steps`` rounds (the last round's candidates all count as final).

The search concludes with the ``n`` best-scoring final candidates (the paper's "N final
answer candidates"; the others are pruned), and the answer is selected among them
(weighted best-of-N by default). A finished solution is a final candidate whatever its
rank: it is already scored and costs nothing more, and letting only the ``n / m`` best
candidates finish would leave a vote over a few solutions, where the paper votes over ``n``.

Generations: ``n`` per prompt, ``n * (k + 1)`` with lookahead ``k``.
"""

from __future__ import annotations

import math
from typing import Sequence

from ponder.search.engine import AnswerOf, SearchResult, SearchRun
from ponder.search.policy import GREEDY, Branch, Policy, Sampling
from ponder.search.verifier import Verifier

__all__ = ["beam_search", "lookahead_search", "rank"]


def rank(scores: Sequence[float]) -> list[int]:
    """Indices from the best score to the worst; NaN last; ties keep their order."""
    return sorted(range(len(scores)), key=lambda i: (math.isnan(scores[i]), -scores[i] if scores[i] == scores[i]
                                                     else 0.0, i))


def beam_search(policy: Policy, verifier: Verifier, questions: Sequence[str], n: int = 16, width: int = 4, *,
                answer_of: AnswerOf, max_steps: int = 40, selection: str = "weighted",
                sampling: Sampling = Sampling(), seed: int = 0,
                progress: bool | None = None) -> SearchResult:
    """Beam search with ``n`` beams and beam width ``width`` (see the module docstring)."""
    return lookahead_search(policy, verifier, questions, n, width, 0, answer_of=answer_of, max_steps=max_steps,
                            selection=selection, sampling=sampling, seed=seed, method="beam_search",
                            progress=progress)


def lookahead_search(policy: Policy, verifier: Verifier, questions: Sequence[str], n: int = 16, width: int = 4,
                     k: int = 1, *, answer_of: AnswerOf, max_steps: int = 40, selection: str = "weighted",
                     sampling: Sampling = Sampling(), seed: int = 0, method: str = "lookahead_search",
                     progress: bool | None = None) -> SearchResult:
    """Lookahead search with ``k`` greedy roll-out steps per candidate; ``k=0`` is beam search."""
    if n < 1 or width < 1 or n % width:
        raise ValueError(f"n ({n}) must be a positive multiple of the beam width ({width})")
    if k < 0 or max_steps < 1:
        raise ValueError(f"k must be >= 0 and max_steps >= 1, got k={k}, max_steps={max_steps}")
    keep = n // width
    run = SearchRun(policy, verifier, answer_of, seed=seed, method=method, progress=progress)
    with run.running():
        candidates = run.first_steps(questions, n, sampling)
        finals: list[list[tuple[Branch, float]]] = [[] for _ in questions]
        for depth in range(max_steps):
            flat = [b for group in candidates for b in group]
            scores = iter(_evaluate(run, flat, k).tolist())
            survivors: list[tuple[int, Branch, float]] = []
            for p, group in enumerate(candidates):
                group_scores = [next(scores) for _ in group]
                unfinished = []
                for i in rank(group_scores):
                    if group[i].finished or depth == max_steps - 1:
                        finals[p].append((group[i], group_scores[i]))
                        run.drop(group[i])
                    else:
                        unfinished.append(i)
                for i in unfinished[keep:]:
                    run.drop(group[i], "pruned")
                survivors += [(p, group[i], group_scores[i]) for i in unfinished[:keep]]
            run.tick(depth + 1, max_steps)
            if not survivors:
                break
            groups = run.expand([b for _, b, _ in survivors], width, sampling)
            candidates = [[] for _ in questions]
            for (p, parent, _), children in zip(survivors, groups):
                candidates[p] += children
                run.drop(parent, "kept")
        run.spend.generations += n * (k + 1) * len(questions)
        for p, group in enumerate(finals):
            best = rank([score for _, score in group])
            for i in best[n:]:
                run.drop(group[i][0], "pruned")
            finals[p] = [group[i] for i in sorted(best[:n])]
        return run.result(method, finals, selection, {"n": n, "width": width, "k": k, "max_steps": max_steps,
                                                      "selection": selection, "seed": seed,
                                                      "sampling": vars(sampling)})


def _evaluate(run: SearchRun, candidates: list[Branch], k: int):
    """Verifier values of the candidates; with ``k > 0``, at the end of a greedy ``k``-step roll-out of each."""
    if k == 0:
        return run.score(candidates)
    values = run.score(candidates)  # every candidate's own score goes in the tree
    ends = run.advance(candidates, GREEDY, k, rollout=True)
    rolled = [i for i, (c, e) in enumerate(zip(candidates, ends)) if e is not c]
    if rolled:
        values[rolled] = run.score([ends[i] for i in rolled])
        for i in rolled:
            run.drop(ends[i])
    return values
