"""The shipped checkpoints: they load like any checkpoint and reproduce their recorded accuracy."""

from __future__ import annotations

import re

import pytest
import torch

import ponder
from ponder.builtin import CHECKPOINTS, checkpoint, task_answer, task_checker, task_policy
from ponder.models import load_tokenizer
from ponder.search import CheckerVerifier, PRMVerifier, Sampling, best_of_n, revisions
from ponder.tasks import split

# Recorded when the checkpoints were trained: 4 samples (T = 1, seed 0) of each of the
# first 20 test problems, checked; the PRM's ranking of them; a chain of 3 revisions of
# each by the revision model (T = 1, seed 0), checked; and of the first 40 test problems,
# how often the PRM and the prover score the reference solution above the same solution
# with its last result off by one.
RECORDED_SAMPLES_CORRECT = 40  # of 80
RECORDED_PRM_MAX_CORRECT = 14  # of 20
RECORDED_REVISIONS_CORRECT = 39  # of 60
RECORDED_OFF_BY_ONE_CAUGHT = {"prm": 36, "prover": 37}  # of 40
SHIPPED = ["policy", "prm", "prover", "revision"]


@pytest.fixture(scope="module")
def policy():
    path = checkpoint("policy")
    return ponder.load_model(path), load_tokenizer(path)


def test_every_shipped_checkpoint_is_a_hugging_face_directory():
    for name in SHIPPED:
        path = checkpoint(name)
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in path.iterdir()}
        assert sum(p.stat().st_size for p in path.iterdir()) < 8 * 2**20
    with pytest.raises(FileNotFoundError, match=r"no built-in checkpoint 'critic'.*" + re.escape(str(SHIPPED))):
        checkpoint("critic")
    assert CHECKPOINTS.name == "checkpoints"


def test_policy_and_prm_reproduce_their_recorded_accuracy(policy):
    model, tokenizer = policy
    problems = split("test", 20)
    questions = [p.prompt for p in problems]
    sampled = best_of_n(task_policy(model, tokenizer), CheckerVerifier(task_checker(problems)), questions, 4,
                        answer_of=task_answer, sampling=Sampling(temperature=1.0), seed=0, progress=False)
    correct = sum(int(c.score) for r in sampled.results for c in r.candidates)
    assert correct == RECORDED_SAMPLES_CORRECT
    prm = ponder.load_prm(checkpoint("prm"))
    ranked = best_of_n(task_policy(model, tokenizer), PRMVerifier(prm.scorer(1 << 14)), questions, 4,
                       answer_of=task_answer, selection="max", sampling=Sampling(temperature=1.0), seed=0,
                       progress=False)
    assert [c.steps for r in ranked.results for c in r.candidates] == \
        [c.steps for r in sampled.results for c in r.candidates]  # same seed, same samples
    assert sum(a == p.answer for a, p in zip(ranked.answers, problems)) == RECORDED_PRM_MAX_CORRECT


def _last_result_off_by_one(steps: tuple[str, ...]) -> list[str]:
    *head, last, _ = steps
    left, result = last.rsplit(" = ", 1)
    return [*head, f"{left} = {int(result) + 1}", f"Answer: {int(result) + 1}"]


@pytest.mark.parametrize("name", ["prm", "prover"])
def test_prm_and_prover_reproduce_their_recorded_step_checks(name):
    problems = split("test", 40)
    questions = [p.prompt for p in problems]
    verifier = ponder.load_prm(checkpoint(name))
    _, right = verifier.score(questions, [list(p.steps) for p in problems])
    _, wrong = verifier.score(questions, [_last_result_off_by_one(p.steps) for p in problems])
    assert torch.isfinite(right).all() and torch.isfinite(wrong).all()
    assert int((right > wrong).sum()) == RECORDED_OFF_BY_ONE_CAUGHT[name]


def test_revision_model_reproduces_its_recorded_accuracy(policy):
    _, tokenizer = policy
    problems = split("test", 20)
    reviser = ponder.load_model(checkpoint("revision"))
    chains = revisions(task_policy(reviser, tokenizer, cache_tokens=1 << 15), CheckerVerifier(task_checker(problems)),
                       [p.prompt for p in problems], answer_of=task_answer, chains=1, length=3,
                       sampling=Sampling(temperature=1.0), seed=0, progress=False)
    assert all(len(r.candidates) == 3 for r in chains.results)
    assert sum(int(c.score) for r in chains.results for c in r.candidates) == RECORDED_REVISIONS_CORRECT
