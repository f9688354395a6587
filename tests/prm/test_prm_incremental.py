"""Incremental PRM scores on the forked KV tree equal transformers scoring each full prefix from scratch."""

from __future__ import annotations

import math

import pytest
import torch

from ponder.kv import BlockStateError, OutOfBlocks
from ponder.prm import ProgressScorer, load_prm
from prm_checkpoints import LOAD_ARGS

TOL = 1e-4
QUESTIONS = ["3 + 4 * 2", "(12 - 5) * 3 - 8"]
STEPS = ["4 * 2 = 8", "3 + 8 = 11", "Answer: 11", "12 - 5 = 7", "7 * 3 = 21", "21 - 8 = 13", "Answer: 13",
         "1 + 1 = 3", "8 * 8 = 64"]


def aggregate(scores: list[float], how: str) -> float:
    scores = [s for s in scores if not math.isnan(s)]
    if not scores:
        return float("nan")
    return {"last": scores[-1], "min": min(scores), "prod": math.prod(scores),
            "mean": sum(scores) / len(scores)}[how]


class Mirror:
    """Drives an IncrementalScorer and keeps each branch's question and steps, to check against the oracle."""

    def __init__(self, scorer, oracle):
        self.scorer, self.oracle = scorer, oracle
        self.history: dict[int, tuple[str, list[str]]] = {}

    def start(self, questions):
        branches, roots = self.scorer.start(questions)
        for branch, question, root in zip(branches, questions, roots.tolist()):
            self.history[branch] = (question, [])
            assert root == pytest.approx(self.oracle.root_value(question), abs=TOL)
        return branches

    def fork(self, branch, n):
        children = self.scorer.fork(branch, n)
        for child in children:
            question, steps = self.history[branch]
            self.history[child] = (question, list(steps))
        return children

    def free(self, branch):
        self.scorer.free(branch)
        del self.history[branch]

    def extend(self, branches, steps):
        out = self.scorer.extend(branches, steps)
        got = iter(out.scores.tolist())
        for i, (branch, entry) in enumerate(zip(branches, steps)):
            new = [entry] if isinstance(entry, str) else list(entry)
            question, history = self.history[branch]
            history += new
            expected = self.oracle.step_scores(question, history).tolist()
            for score, want in zip([next(got) for _ in new], expected[-len(new):]):
                assert (math.isnan(score) and math.isnan(want)) or score == pytest.approx(want, abs=TOL)
            assert out.values[i].item() == pytest.approx(aggregate(expected, self.scorer.aggregate), abs=TOL,
                                                         nan_ok=True)
        return out


@pytest.mark.parametrize("aggregate_by", ["last", "min", "prod", "mean"])
@pytest.mark.parametrize("name", ["pair", "classifier", "value", "mlp", "outcome", "surprisal"])
def test_incremental_scores_match_transformers_across_fork_cow_and_free(prm_checkpoint, name, aggregate_by):
    if name == "outcome" and aggregate_by != "last":
        pytest.skip("an outcome model has one score: every aggregate is that score")
    directory, oracle = prm_checkpoint(name)
    prm = load_prm(directory, **LOAD_ARGS[name])
    tree = Mirror(prm.scorer(num_blocks=64, block_size=4, aggregate=aggregate_by), oracle)
    a, b = tree.start(QUESTIONS)
    tree.extend([a, b], [STEPS[0], STEPS[3]])
    kids = tree.fork(a, 3)  # they share a's partially filled last block: the next extend copies it
    tree.extend(kids + [b], [STEPS[1], STEPS[7], [STEPS[8], STEPS[1]], STEPS[4]])
    tree.free(kids[1])
    tree.free(a)
    grandkids = tree.fork(kids[0], 2)
    tree.extend(grandkids + [kids[2]], [STEPS[2], [STEPS[8], STEPS[2]], STEPS[2]])
    (again,) = tree.start(QUESTIONS[1:])  # the prompt's full blocks come from the prefix cache
    tree.extend([again, b], [[STEPS[3], STEPS[4]], [STEPS[5], STEPS[6]]])
    tree.scorer.cache.check_invariants()
    for branch in list(tree.history):
        tree.free(branch)
    assert tree.scorer.cache.stats().blocks.used == 0


@pytest.mark.parametrize("name", ["pair", "value", "outcome", "surprisal"])
def test_dense_score_matches_transformers(prm_checkpoint, name):
    directory, oracle = prm_checkpoint(name)
    prm = load_prm(directory, **LOAD_ARGS[name])
    solutions = [STEPS[:3], STEPS[3:7], STEPS[7:8]]
    questions = [QUESTIONS[0], QUESTIONS[1], QUESTIONS[0]]
    per_step, values = prm.score(questions, solutions, aggregate="min")
    for question, steps, got, value in zip(questions, solutions, per_step, values.tolist()):
        expected = oracle.step_scores(question, steps)
        torch.testing.assert_close(got.double(), expected, atol=TOL, rtol=0, equal_nan=True)
        assert value == pytest.approx(aggregate(expected.tolist(), "min"), abs=TOL)


def test_outcome_model_scores_final_steps_only(prm_checkpoint):
    directory, oracle = prm_checkpoint("outcome")
    scorer = load_prm(directory, **LOAD_ARGS["outcome"]).scorer(num_blocks=32, block_size=4)
    (root,) = scorer.start(QUESTIONS[:1])[0]
    out = scorer.extend([root], [STEPS[0]], final=[False])
    assert math.isnan(out.scores[0]) and math.isnan(out.values[0]) and out.counts.tolist() == [0]
    out = scorer.extend([root], [STEPS[1:3]], final=[True])
    assert math.isnan(out.scores[0])
    expected = oracle.step_scores(QUESTIONS[0], STEPS[:3])[-1].item()
    assert out.scores[1].item() == pytest.approx(expected, abs=TOL)
    assert out.values[0].item() == pytest.approx(expected, abs=TOL) and out.counts.tolist() == [1]


def test_progress_scores_are_q_plus_alpha_times_prover_progress(prm_checkpoint):
    base_dir, base_oracle = prm_checkpoint("value")
    prover_dir, prover_oracle = prm_checkpoint("value", seed=1)
    alpha = 0.7
    pav = ProgressScorer(load_prm(base_dir, **LOAD_ARGS["value"]).scorer(num_blocks=64, block_size=4),
                         load_prm(prover_dir, **LOAD_ARGS["value"]).scorer(num_blocks=64, block_size=4), alpha)
    (root,), _ = pav.start(QUESTIONS[:1])
    kids = pav.fork(root, 2)
    pav.free(root)
    plans = [[STEPS[0], STEPS[1]], [STEPS[7]]]
    out = pav.extend(kids, plans)
    second = pav.extend(kids, [STEPS[2], STEPS[8]])
    for i, steps in enumerate(plans):
        history = steps + [[STEPS[2], STEPS[8]][i]]
        q = base_oracle.step_scores(QUESTIONS[0], history)
        v = prover_oracle.step_scores(QUESTIONS[0], history)
        before = torch.cat([torch.tensor([prover_oracle.root_value(QUESTIONS[0])], dtype=torch.float64), v[:-1]])
        expected = q + alpha * (v - before)
        got = torch.cat([out.scores[out.branch == i], second.scores[second.branch == i]]).double()
        torch.testing.assert_close(got, expected, atol=TOL, rtol=0)
        assert pav.values([kids[i]]).item() == pytest.approx(expected[-1].item(), abs=TOL)
    assert pav.tokens_processed == pav.base.tokens_processed + pav.prover.tokens_processed > 0


def test_extend_costs_only_the_new_tokens(prm_checkpoint):
    directory, _ = prm_checkpoint("value")
    prm = load_prm(directory, **LOAD_ARGS["value"])
    scorer = prm.scorer(num_blocks=64, block_size=4)
    (root,), _ = scorer.start(QUESTIONS[:1])
    after_start = scorer.tokens_processed
    assert after_start == len(prm.encode_prompt(QUESTIONS[0]))
    kids = scorer.fork(root, 4)
    scorer.extend(kids, STEPS[:4])
    assert scorer.tokens_processed - after_start == sum(len(prm.encode_step(s).ids) for s in STEPS[:4])


def test_freed_and_unknown_branches_are_clear_errors(prm_checkpoint):
    directory, _ = prm_checkpoint("value")
    scorer = load_prm(directory, **LOAD_ARGS["value"]).scorer(num_blocks=32, block_size=4)
    (root,), _ = scorer.start(QUESTIONS[:1])
    (kid,) = scorer.fork(root, 1)
    scorer.free(kid)
    for call in (lambda: scorer.extend([kid], [STEPS[0]]), lambda: scorer.values([kid]), lambda: scorer.free(kid),
                 lambda: scorer.fork(kid, 2)):
        with pytest.raises(BlockStateError, match=f"PRM branch {kid} was freed"):
            call()
    with pytest.raises(BlockStateError, match="is not a branch of this scorer"):
        scorer.extend([root + 100], [STEPS[0]])


def test_out_of_blocks_leaves_every_branch_as_it_was(prm_checkpoint):
    directory, oracle = prm_checkpoint("value")
    scorer = load_prm(directory, **LOAD_ARGS["value"]).scorer(num_blocks=20, block_size=4)
    (root,), _ = scorer.start(QUESTIONS[:1])
    kids = scorer.fork(root, 2)
    scorer.extend(kids, [STEPS[0], STEPS[7]])
    tokens = [scorer.tokens(k) for k in kids]
    # Bytes, not values: blocks never written hold uninitialised memory, possibly NaN.
    values, k_bytes = scorer.values(kids), scorer.cache.k.view(torch.uint8).clone()
    with pytest.raises(OutOfBlocks):
        scorer.extend(kids, [" ".join(STEPS), " ".join(STEPS)])
    assert [scorer.tokens(k) for k in kids] == tokens
    torch.testing.assert_close(scorer.values(kids), values)
    assert torch.equal(scorer.cache.k.view(torch.uint8), k_bytes)
    scorer.cache.check_invariants()
    out = scorer.extend(kids, [STEPS[1], STEPS[1]])  # still usable, and still right
    assert out.scores[0].item() == pytest.approx(oracle.step_scores(QUESTIONS[0], STEPS[:2])[-1].item(), abs=TOL)


def test_progress_scorer_out_of_blocks_in_the_prover_changes_neither_tree(prm_checkpoint):
    base_dir, _ = prm_checkpoint("value")
    prover_dir, _ = prm_checkpoint("value", seed=1)
    base = load_prm(base_dir, **LOAD_ARGS["value"]).scorer(num_blocks=64, block_size=4)
    prover = load_prm(prover_dir, **LOAD_ARGS["value"]).scorer(num_blocks=10, block_size=4)  # the small one
    pav = ProgressScorer(base, prover, alpha=0.5)
    (root,), _ = pav.start(QUESTIONS[:1])
    out = pav.extend([root], [STEPS[0]])
    used = (base.cache.stats().blocks.used, prover.cache.stats().blocks.used)
    tokens = (base.tokens(root), prover.tokens(pav._prover_of[root]))
    with pytest.raises(OutOfBlocks, match="extending these PRM branches needs"):
        pav.extend([root], [" ".join(STEPS)])
    assert (base.cache.stats().blocks.used, prover.cache.stats().blocks.used) == used
    assert (base.tokens(root), prover.tokens(pav._prover_of[root])) == tokens
    assert pav.values([root]).item() == pytest.approx(out.values[0].item())
