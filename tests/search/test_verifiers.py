"""The Monte-Carlo verifiers on the synthetic policy, whose roll-outs are known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from ponder.search import MonteCarloProgressVerifier, MonteCarloVerifier, Sampling, Spend, beam_search, best_of_value
from search_toys import ToyPolicy, answer, answer_of, finished


def checker(prompt: int, branch) -> bool:
    return answer(branch.steps) == 0


def right_rollouts(steps: tuple[str, ...], k: int) -> int:
    """The toy policy's ``k`` roll-outs of ``steps``: the j-th appends ``j``, then ``0`` until finished."""
    if finished(steps):
        return k * (answer(steps) == 0)
    right = 0
    for j in range(k):
        path = steps + (str(j),)
        while not finished(path):
            path += ("0",)
        right += answer(path) == 0
    return right


def first_steps(make_verifier, width: int = 5):
    """``make_verifier(policy)`` over a toy policy, a root attached to it, and the root's
    ``width`` children forked through it: (verifier, policy, root, children, spend)."""
    policy, spend = ToyPolicy(), Spend()
    verifier = make_verifier(policy)
    (root,) = policy.start(["q"], spend)
    verifier.attach([root], ["q"], spend)
    (children,) = [[s.branch for s in group] for group in policy.expand([root], width, Sampling(), 0, spend)]
    verifier.fork(root, children)
    return verifier, policy, root, children, spend


@pytest.mark.parametrize("rollouts, best_of", [(4, 1), (4, 4), (8, 4), (16, 3)])
def test_best_of_value_is_the_chance_that_one_of_k_draws_without_replacement_is_right(rollouts, best_of):
    for right in range(rollouts + 1):
        wrong_only = math.comb(rollouts - right, best_of) / math.comb(rollouts, best_of)
        assert best_of_value(right, rollouts, best_of) == pytest.approx(1 - wrong_only)
    assert best_of_value(3, rollouts, 1) == pytest.approx(3 / rollouts)
    values = [best_of_value(c, rollouts, best_of) for c in range(rollouts + 1)]
    assert values[0] == 0 and values[-1] == 1 and values == sorted(values)


def test_best_of_value_rejects_counts_outside_the_rollouts():
    with pytest.raises(ValueError, match=r"best_of must be in 1..4 \(the roll-outs it is estimated from\), got 5"):
        best_of_value(1, 4, 5)
    with pytest.raises(ValueError, match="best_of must be in 1..4"):
        best_of_value(1, 4, 0)
    with pytest.raises(ValueError, match="right must be in 0..4, got 5"):
        best_of_value(5, 4, 2)


def test_monte_carlo_value_is_the_share_of_right_rollouts():
    verifier, policy, root, children, spend = first_steps(lambda policy: MonteCarloVerifier(policy, checker, k=6))
    values = verifier.score(children, spend)
    assert values.dtype == torch.float32
    assert values.tolist() == pytest.approx([right_rollouts(tuple(c.steps), 6) / 6 for c in children])
    assert len(policy.live) == 1 + len(children)  # the roll-outs were freed


@pytest.mark.parametrize("k, best_of, alpha", [(8, 4, 1.0), (6, 2, 3.0), (4, 4, 0.5)])
def test_progress_is_q_plus_alpha_times_the_provers_gain_over_the_parent(k, best_of, alpha):
    verifier, policy, root, children, spend = first_steps(
        lambda policy: MonteCarloProgressVerifier(policy, checker, k=k, best_of=best_of, alpha=alpha))
    at_root = best_of_value(right_rollouts((), k), k, best_of)
    first = verifier.score(children, spend)
    q = [right_rollouts(tuple(c.steps), k) / k for c in children]
    v = [best_of_value(right_rollouts(tuple(c.steps), k), k, best_of) for c in children]
    assert first.tolist() == pytest.approx([qi + alpha * (vi - at_root) for qi, vi in zip(q, v)])
    # The prover's value ranks one parent's children as Q does.
    assert sorted(range(len(q)), key=lambda i: (-q[i], i)) == sorted(range(len(q)), key=lambda i: (-first[i], i))
    # A grandchild's advantage is over its parent's value; a finished one's values are the verdict.
    parent = next(c for c in children if not c.finished)
    grandchildren = [s.branch for s in policy.expand([parent], 3, Sampling(), 0, spend)[0]]
    verifier.fork(parent, grandchildren)
    before = v[children.index(parent)]
    second = verifier.score(grandchildren, spend)
    for child, score in zip(grandchildren, second.tolist()):
        right = right_rollouts(tuple(child.steps), k)
        q_child = right / k
        v_child = q_child if child.finished else best_of_value(right, k, best_of)
        assert score == pytest.approx(q_child + alpha * (v_child - before))
    assert any(c.finished for c in grandchildren)  # ("0" at depth 2 ends a toy solution)


def test_progress_with_alpha_zero_is_the_monte_carlo_value():
    plain, _, _, children, spend = first_steps(lambda policy: MonteCarloVerifier(policy, checker, k=8))
    progress, _, _, same_children, same_spend = first_steps(
        lambda policy: MonteCarloProgressVerifier(policy, checker, k=8, alpha=0.0))
    assert torch.equal(progress.score(same_children, same_spend), plain.score(children, spend))


def test_progress_verifier_refuses_branches_it_does_not_follow_and_bad_settings():
    verifier, policy, root, children, spend = first_steps(
        lambda policy: MonteCarloProgressVerifier(policy, checker, k=4))
    verifier.free(children[0])
    with pytest.raises(ValueError, match=f"branch {children[0].uid} was not attached or forked through this verifier"):
        verifier.score(children[:2], spend)
    stranger = policy.expand([root], 1, Sampling(), 1, spend)[0][0].branch  # expanded, never forked through it
    with pytest.raises(ValueError, match=f"branch {stranger.uid} was not attached"):
        verifier.score([stranger], spend)
    with pytest.raises(ValueError, match=r"best_of must be in 1..4 .*got 5"):
        MonteCarloProgressVerifier(ToyPolicy(), checker, k=4, best_of=5)
    with pytest.raises(ValueError, match="alpha must be finite, got nan"):
        MonteCarloProgressVerifier(ToyPolicy(), checker, k=4, alpha=float("nan"))
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        MonteCarloProgressVerifier(ToyPolicy(), checker, k=0, best_of=1)


def test_beam_search_against_rollout_values_frees_everything_and_repeats_under_a_seed():
    results = []
    for _ in range(2):
        policy = ToyPolicy()
        verifier = MonteCarloProgressVerifier(policy, checker, k=4, alpha=2.0)
        result = beam_search(policy, verifier, ["a", "b"], n=8, width=2, answer_of=answer_of, seed=3)
        assert not policy.live and not verifier._before and not verifier._prover_value
        results.append([(r.answer, [(tuple(c.steps), c.score) for c in r.candidates]) for r in result.results])
    assert results[0] == results[1]
