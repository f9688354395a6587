"""Compute-optimal test-time scaling (Snell et al. 2024, sections 3.2 and 5.3): a strategy per difficulty bin.

1. Difficulty: :func:`estimate_difficulty` is the verifier's mean score over a few probe
   solutions of each question (the paper's model-predicted difficulty); :class:`DifficultyBins`
   cuts those scores into five quantile bins fitted on validation questions, bin 0 the
   easiest (highest mean score).
2. Records: every candidate :class:`Strategy` (a method with its hyper-parameters as a
   function of the generation budget) is run on the validation questions at each budget;
   ``accuracy[strategy][budget]`` is a float tensor [Q] of per-question correctness.
3. :func:`fit_table` picks, for each bin and budget, the strategy of best mean accuracy
   on the given questions; :func:`cross_validate` scores that choice with two-fold cross
   validation (fit on one half of the questions, evaluate on the other, and back);
   :func:`apply` runs the chosen strategy for each question of a new set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from ponder.search.best_of_n import best_of_n
from ponder.search.engine import AnswerOf, SearchResult
from ponder.search.policy import Policy, Sampling
from ponder.search.verifier import Verifier

__all__ = ["Strategy", "DifficultyBins", "estimate_difficulty", "fit_table", "cross_validate", "apply"]

Accuracy = Mapping[str, Mapping[int, torch.Tensor]]  # strategy name -> budget -> float [Q] correctness


@dataclass(frozen=True)
class Strategy:
    """A search method and its keyword arguments at a generation budget (None: not applicable there).

    Example: ``Strategy("beam-4", beam_search, lambda b: {"n": b, "width": 4} if b >= 4 else None)``.
    """

    name: str
    method: Callable[..., SearchResult]
    kwargs_for: Callable[[int], dict | None]


def estimate_difficulty(policy: Policy, verifier: Verifier, questions: Sequence[str], *, answer_of: AnswerOf,
                        probes: int = 8, sampling: Sampling = Sampling(), seed: int = 0) -> torch.Tensor:
    """float32 [Q]: each question's mean verifier score over ``probes`` sampled solutions (higher is easier)."""
    result = best_of_n(policy, verifier, questions, probes, answer_of=answer_of, sampling=sampling, seed=seed,
                       progress=False)
    return torch.tensor([sum(c.score for c in r.candidates) / len(r.candidates) for r in result.results],
                        dtype=torch.float32)


class DifficultyBins:
    """Quantile bins of difficulty scores: bin 0 holds the highest scores (the easiest questions)."""

    def __init__(self, edges: torch.Tensor):
        self.edges = edges  # float32 [bins - 1], descending

    @classmethod
    def fit(cls, scores: torch.Tensor, bins: int = 5) -> "DifficultyBins":
        if bins < 1 or scores.numel() < bins:
            raise ValueError(f"need at least {bins} scores to fit {bins} bins, got {scores.numel()}")
        q = torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1]
        edges = torch.quantile(scores.double(), 1 - q).float()  # descending
        return cls(edges)

    @property
    def count(self) -> int:
        return self.edges.numel() + 1

    def assign(self, scores: torch.Tensor) -> torch.Tensor:
        """int64 [Q]: the bin of each score (a score equal to an edge goes to the easier bin)."""
        return (scores[:, None] < self.edges[None, :]).sum(dim=1)


def _check_records(accuracy: Accuracy, questions: int) -> list[int]:
    budgets = sorted({b for per in accuracy.values() for b in per})
    for name, per in accuracy.items():
        for budget, acc in per.items():
            if acc.shape != (questions,):
                raise ValueError(f"accuracy[{name!r}][{budget}] has shape {tuple(acc.shape)}: expected [{questions}]")
    return budgets


def fit_table(accuracy: Accuracy, bins: torch.Tensor, num_bins: int,
              subset: torch.Tensor | None = None) -> dict[tuple[int, int], str]:
    """``{(bin, budget): strategy name}``: the best mean accuracy over the questions of ``subset`` in that bin.

    Ties go to the strategy listed first. A bin without questions in ``subset`` takes
    the choice fitted on all of ``subset``.
    """
    count = bins.numel()
    budgets = _check_records(accuracy, count)
    subset = torch.ones(count, dtype=torch.bool) if subset is None else subset
    table = {}
    for budget in budgets:
        names = [n for n in accuracy if budget in accuracy[n]]
        overall = max(names, key=lambda n: (float(accuracy[n][budget][subset].mean()), -names.index(n)))
        for b in range(num_bins):
            mask = subset & (bins == b)
            table[b, budget] = overall if not bool(mask.any()) else max(
                names, key=lambda n: (float(accuracy[n][budget][mask].mean()), -names.index(n)))
    return table


def cross_validate(accuracy: Accuracy, bins: torch.Tensor, num_bins: int, *, folds: int = 2,
                   seed: int = 0, groups: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """``{budget: float [Q]}``: each question's correctness under the strategy fitted on the other folds.

    ``groups`` (int64 [Q], default every question its own): questions with one group id
    fall in one fold, so that copies of a question (a bootstrap resample of the
    questions) are never fitted on in one fold and scored in the other.
    """
    count = bins.numel()
    budgets = _check_records(accuracy, count)
    groups = torch.arange(count) if groups is None else groups
    if groups.shape != (count,) or groups.dtype != torch.int64:
        raise ValueError(f"groups must be int64 [{count}] (one id per question), "
                         f"got {groups.dtype} {tuple(groups.shape)}")
    ids, group_of = torch.unique(groups, return_inverse=True)
    fold = (torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(seed)) % folds)[group_of]
    out = {budget: torch.zeros(count) for budget in budgets}
    for f in range(folds):
        scored = fold == f
        table = fit_table(accuracy, bins, num_bins, subset=~scored)
        for budget in budgets:
            for b in range(num_bins):
                members = scored & (bins == b)
                out[budget][members] = accuracy[table[b, budget]][budget][members]
    return out


def apply(table: Mapping[tuple[int, int], str], strategies: Sequence[Strategy], bins: torch.Tensor, budget: int,
          policy: Policy, verifier: Verifier, questions: Sequence[str], *, answer_of: AnswerOf,
          **method_kwargs) -> list:
    """Answer each question with the strategy the table chose for its bin at ``budget``.

    Questions sharing a strategy run together, in one search. Returns per question its
    :class:`~ponder.search.engine.PromptResult`.
    """
    by_name = {s.name: s for s in strategies}
    groups: dict[str, list[int]] = {}
    for q in range(len(questions)):
        groups.setdefault(table[int(bins[q]), budget], []).append(q)
    out: list = [None] * len(questions)
    for name, members in groups.items():
        strategy = by_name[name]
        kwargs = strategy.kwargs_for(budget)
        if kwargs is None:
            raise ValueError(f"the table chose {name!r} at budget {budget}, where it does not apply")
        result = strategy.method(policy, verifier, [questions[q] for q in members], answer_of=answer_of,
                                 **kwargs, **method_kwargs)
        for q, r in zip(members, result.results):
            out[q] = r
    return out
