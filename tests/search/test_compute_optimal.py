"""Compute-optimal selection: difficulty bins, the per-bin table, two-fold cross validation, applying it."""

from __future__ import annotations

import pytest
import torch

from ponder.search import beam_search, best_of_n
from ponder.search.compute_optimal import (DifficultyBins, Strategy, apply, cross_validate, estimate_difficulty,
                                           fit_table)
from search_toys import ToyPolicy, ToyVerifier, answer_of, finished, reference_lookahead, value


def test_bins_are_quantiles_with_the_easiest_first():
    scores = torch.arange(100, dtype=torch.float32) / 100
    bins = DifficultyBins.fit(scores)
    assigned = bins.assign(scores)
    assert torch.bincount(assigned).tolist() == [20] * 5
    assert assigned[99] == 0 and assigned[0] == 4  # the highest mean score is the easiest bin
    with pytest.raises(ValueError, match="need at least 5 scores"):
        DifficultyBins.fit(torch.rand(3))


def records(q: int = 40):
    """Strategy "a" right on bins 0-2, "b" right on bins 3-4; "c" never; budgets 4 and 16 alike."""
    bins = torch.arange(q) % 5
    easy = (bins <= 2).float()
    acc = {"a": easy, "b": 1 - easy, "c": torch.zeros(q)}
    return {name: {4: a, 16: a.clone()} for name, a in acc.items()}, bins


def test_fit_table_picks_the_best_strategy_per_bin_and_budget():
    accuracy, bins = records()
    table = fit_table(accuracy, bins, 5)
    assert table == {(b, budget): ("a" if b <= 2 else "b") for b in range(5) for budget in (4, 16)}
    # ties go to the strategy listed first; an empty bin takes the overall choice
    tied = {"x": {4: torch.ones(10)}, "y": {4: torch.ones(10)}}
    assert set(fit_table(tied, torch.zeros(10, dtype=torch.int64), 2).values()) == {"x"}


def test_cross_validation_matches_brute_force():
    accuracy, bins = records()
    cv = cross_validate(accuracy, bins, 5)
    oracle = torch.maximum(accuracy["a"][4], accuracy["b"][4])
    assert torch.equal(cv[4], oracle) and torch.equal(cv[16], oracle)  # both folds agree on every bin
    # a strategy that looks best on one fold only: brute force over the same folds
    gen = torch.Generator().manual_seed(1)
    noisy = {n: {4: (torch.rand(40, generator=gen) < p).float()} for n, p in (("a", 0.5), ("b", 0.5))}
    cv = cross_validate(noisy, bins, 5, seed=3)
    fold = torch.randperm(40, generator=torch.Generator().manual_seed(3)) % 2
    for q in range(40):
        train = (fold != fold[q]) & (bins == bins[q])
        means = {n: float(noisy[n][4][train].mean()) for n in ("a", "b")}
        pick = "a" if means["a"] >= means["b"] else "b"
        assert cv[4][q] == noisy[pick][4][q]
    with pytest.raises(ValueError, match=r"accuracy\['a'\]\[4\] has shape"):
        cross_validate({"a": {4: torch.zeros(3)}}, bins, 5)



def test_cross_validation_keeps_the_copies_of_a_question_in_one_fold():
    """A bootstrap resample holds questions twice or more; ``groups`` keeps each one's copies
    out of the fold that is fitted when they are scored."""
    gen = torch.Generator().manual_seed(5)
    distinct = {n: (torch.rand(30, generator=gen) < 0.5).float() for n in ("a", "b", "c")}
    distinct_bins = torch.arange(30) % 5
    resample = torch.randint(30, (60,), generator=gen)
    accuracy = {n: {4: a[resample]} for n, a in distinct.items()}
    bins = distinct_bins[resample]
    cv = cross_validate(accuracy, bins, 5, seed=2, groups=resample)
    ids, group_of = torch.unique(resample, return_inverse=True)
    fold = (torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(2)) % 2)[group_of]
    for q in range(60):
        train = (fold != fold[q]) & (bins == bins[q])
        assert not bool((resample[train] == resample[q]).any())  # no copy of q among what is fitted
        means = {n: float(accuracy[n][4][train].mean()) for n in ("a", "b", "c")}
        pick = max(means, key=lambda n: (means[n], -"abc".index(n)))
        assert cv[4][q] == accuracy[pick][4][q]
    # every question its own group is the default
    plain = cross_validate(accuracy, bins, 5, seed=2)
    assert torch.equal(cross_validate(accuracy, bins, 5, seed=2, groups=torch.arange(60))[4], plain[4])
    with pytest.raises(ValueError, match=r"groups must be int64 \[60\]"):
        cross_validate(accuracy, bins, 5, groups=torch.arange(59))
    with pytest.raises(ValueError, match=r"groups must be int64 \[60\] .* got torch.float32"):
        cross_validate(accuracy, bins, 5, groups=torch.zeros(60))

def test_difficulty_estimate_and_apply_run_the_chosen_strategy():
    policy, verifier = ToyPolicy(), ToyVerifier()
    questions = [f"q{i}" for i in range(10)]
    difficulty = estimate_difficulty(policy, verifier, questions, answer_of=answer_of, probes=3)
    want = []
    for q in range(10):
        scores = []
        for j in range(3):
            path = (str(j),)
            while not finished(path):
                path += ("0",)
            scores.append(float(torch.tensor(value(path, q), dtype=torch.float32)))
        want.append(sum(scores) / 3)
    torch.testing.assert_close(difficulty, torch.tensor(want))
    bins = DifficultyBins.fit(difficulty).assign(difficulty)
    strategies = [Strategy("bon", best_of_n, lambda b: {"n": b}),
                  Strategy("beam", beam_search, lambda b: {"n": b, "width": 2} if b % 2 == 0 else None)]
    table = {(b, 4): ("bon" if b < 2 else "beam") for b in range(5)}
    results = apply(table, strategies, bins, 4, policy, verifier, questions, answer_of=answer_of)
    beam_members = [q for q in range(10) if int(bins[q]) >= 2]  # run together, in this order
    for q, r in enumerate(results):
        assert r.question == questions[q]
        if int(bins[q]) < 2:
            assert len(r.candidates) == 4  # best-of-4: four candidates
        else:  # the toy verifier scores by the question's index within its search
            want, _ = reference_lookahead(4, 2, 0, 40, beam_members.index(q))
            assert [(tuple(c.steps), c.score) for c in r.candidates] == want
    assert not policy.live and not verifier.live
    with pytest.raises(ValueError, match="where it does not apply"):
        apply({(b, 3): "beam" for b in range(5)}, strategies, bins, 3, policy, verifier, questions,
              answer_of=answer_of)
