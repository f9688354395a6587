"""The PRM trainer: roll-out labels, prover labels, a short run that learns, a checkpoint that loads."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest
import torch

from task_models import TINY_POLICY, checked_labels, other_vocabulary_lm, tiny_policy

import ponder
from ponder.builtin import checkpoint
from ponder.cli import main
from ponder.tasks import split
from ponder.tasks import tokenizer as task_tokenizer
from ponder.train import save_policy, train_policy
from ponder.train.prm import (LabeledSolution, PRMTrainConfig, RolloutConfig, load_labels, prover_labels,
                              prover_rollout_labels, rollout_labels, save_labels, save_prm, step_lm_loss, train_prm)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return tiny_policy(tmp_path_factory.mktemp("policy") / "policy")


@pytest.mark.parametrize("rollouts,best_of", [(4, 1), (4, 2), (4, 4), (6, 3)])
def test_prover_labels_are_the_unbiased_best_of_k_value(rollouts, best_of):
    # The estimate is the mean over every K-subset of the R completions of "any is right".
    for correct in range(rollouts + 1):
        outcomes = [1] * correct + [0] * (rollouts - correct)
        subsets = list(itertools.combinations(outcomes, best_of))
        expected = sum(max(s) for s in subsets) / len(subsets)
        solution = LabeledSolution("q", ("s",), (correct,), rollouts)
        assert math.isclose(prover_labels(solution, best_of)[0], expected, abs_tol=1e-12)
    with pytest.raises(ValueError, match="best_of must be in 1..4"):
        prover_labels(LabeledSolution("q", ("s",), (1,), 4), 5)


def test_rollout_labels_follow_the_solutions(policy_dir, tmp_path):
    model = ponder.load_model(policy_dir)
    problems = split("train", 6)
    config = RolloutConfig(problems=6, samples=3, rollouts=2, prompts_per_batch=4, seed=5)
    labeled = rollout_labels(model, task_tokenizer.build_tokenizer(), problems, config)
    assert 6 * 2 < len(labeled) <= 6 * 3  # a solution of no steps (end of sequence at once) has no label
    by_question = {p.prompt: p for p in problems}
    for solution in labeled:
        assert len(solution.correct) == len(solution.steps) >= 1 and solution.rollouts == 2
        assert all(0 <= c <= 2 for c in solution.correct)
        problem = by_question[solution.question]
        right = ponder.tasks.is_correct(problem, "\n".join(solution.steps))
        assert solution.correct[-1] == (2 if right else 0)  # the final step: the checker's verdict
    again = rollout_labels(model, task_tokenizer.build_tokenizer(), problems, config)
    assert again == labeled  # deterministic under the seed
    assert load_labels(save_labels(labeled, tmp_path / "labels.jsonl")) == labeled


def test_prover_rollout_labels_are_the_provers_values_of_the_policys_prefixes(policy_dir):
    # Reference solutions, every second one's first step wrong (checked_labels), relabelled by
    # roll-outs of a prover: the shipped policy finishes right prefixes of these problems
    # often and seldom mends a wrong first result (it may recompute it in the next step);
    # the tiny policy, barely trained, finishes hardly any.
    labeled = checked_labels(12)
    problems = split("train", 12)
    config = RolloutConfig(rollouts=4, seed=3)
    tokenizer = task_tokenizer.build_tokenizer()
    shipped = prover_rollout_labels(ponder.load_model(checkpoint("policy")), tokenizer, labeled, problems, config,
                                    prefixes_per_batch=5)
    assert [(s.question, s.steps, s.rollouts) for s in shipped] == [(s.question, s.steps, 4) for s in labeled]
    assert [s.correct[-1] for s in shipped] == [s.correct[-1] for s in labeled]  # the checker's verdict
    right = [c for s in shipped[0::2] for c in s.correct[:-1]]
    wrong = [s.correct[0] for s in shipped[1::2]]  # just after the wrong step, before the reference's next
    assert len(right) == 14 and len(wrong) == 6
    assert sum(right) / (4 * len(right)) > 0.5 and sum(wrong) / (4 * len(wrong)) < 0.25
    tiny = prover_rollout_labels(ponder.load_model(policy_dir), tokenizer, labeled, problems, config)
    assert sum(c for s in tiny for c in s.correct[:-1]) < sum(right) / 4
    assert prover_rollout_labels(ponder.load_model(checkpoint("policy")), tokenizer, labeled, problems, config,
                                 prefixes_per_batch=5) == shipped  # deterministic under the seed
    with pytest.raises(ValueError, match="the problems given lack 1 of the labelled questions"):
        prover_rollout_labels(ponder.load_model(policy_dir), tokenizer, labeled, problems[1:], config)


def test_a_short_run_learns_and_saves_a_loadable_prm(policy_dir, tmp_path):
    # A signal a few steps can learn: the answer line is good, every other step bad.
    labeled = [dataclasses.replace(s, correct=tuple(4 * step.startswith("Answer") for step in s.steps))
               for s in checked_labels(64)]
    config = PRMTrainConfig(epochs=12, batch_size=16, lr=3e-3, warmup_steps=2)
    prm, losses = train_prm(policy_dir, labeled, config)
    assert len(losses) == 12 * 4
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4
    path = save_prm(prm, tmp_path / "prm", config, RolloutConfig())
    loaded = ponder.load_prm(path)
    questions, solutions = [s.question for s in labeled[:4]], [list(s.steps) for s in labeled[:4]]
    for mine, theirs in zip(prm.score(questions, solutions)[0], loaded.score(questions, solutions)[0]):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
    assert (path / "tokenizer.json").is_file() and (path / "ponder_train.json").is_file()


def test_prover_prm_trains_on_its_own_labels(policy_dir):
    labeled = [dataclasses.replace(s, correct=tuple(min(c, 1) for c in s.correct)) for s in checked_labels(16)]
    _, losses = train_prm(policy_dir, labeled, PRMTrainConfig(best_of=4, epochs=1, batch_size=8))
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def test_cli_labels_once_and_reuses_the_labels(policy_dir, tmp_path, capsys):
    labels = tmp_path / "labels.jsonl"
    args = ["train", "prm", "--policy", str(policy_dir), "--labels", str(labels), "--problems", "3",
            "--samples", "2", "--rollouts", "2", "--epochs", "1"]
    main(args + ["--out", str(tmp_path / "prm")])
    assert labels.is_file() and "trained 1 steps" in capsys.readouterr().out
    main(args + ["--out", str(tmp_path / "prover"), "--prover-best-of", "2"])
    out = capsys.readouterr().out
    assert f"read {len(load_labels(labels))} labelled solutions from {labels}" in out
    assert ponder.load_prm(tmp_path / "prover").score(["Compute 1 + 2."], [["1 + 2 = 3"]])[1].shape == (1,)
    main(args + ["--out", str(tmp_path / "distinct"), "--prover-policy", str(policy_dir)])
    assert "rolled out" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "distinct" / "ponder_train.json").read_text())
    assert recorded["prover_policy"] == policy_dir.name and recorded["prm"]["best_of"] == 1
    with pytest.raises(ValueError, match=r"vocabulary of 50 tokens, the task's tokenizer 39"):
        main(args + ["--out", str(tmp_path / "foreign"), "--prover-policy", str(other_vocabulary_lm(tmp_path / "lm"))])


def test_cli_starts_the_prm_from_init_when_given(policy_dir, tmp_path, capsys):
    # An LM of another shape than the policy: the PRM takes its weights and shape, the labels the policy's.
    init = save_policy(train_policy(dataclasses.replace(TINY_POLICY, num_layers=3, steps=2))[0], tmp_path / "lm")
    main(["train", "prm", "--policy", str(policy_dir), "--init", str(init), "--labels", str(tmp_path / "l.jsonl"),
          "--problems", "2", "--samples", "2", "--rollouts", "2", "--epochs", "1", "--out", str(tmp_path / "prm")])
    assert "trained 1 steps" in capsys.readouterr().out
    assert ponder.load_prm(tmp_path / "prm").model.config.num_layers == 3
    assert ponder.load_model(policy_dir).config.num_layers == TINY_POLICY.num_layers == 2


def test_step_lm_loss_reads_the_right_solutions_steps_only(policy_dir):
    model = ponder.load_model(policy_dir)
    prm = ponder.prm.PRM(model, task_tokenizer.build_tokenizer(), "ponder-arith",
                         ponder.prm.heads.LinearHead([(torch.zeros(1, model.config.hidden_size), None)]))
    questions, solutions = ["Compute 7 + 5.", "Compute 2 * 3 - 1."], [["7 + 5 = 12", "Answer: 12"],
                                                                      ["2 * 3 = 6", "6 - 1 = 5", "Answer: 5"]]
    packed = prm.pack(questions, solutions)
    hidden = model.dense_hidden(packed.input_ids, packed.attention_mask)
    prompts = torch.tensor([len(prm.encode_prompt(q)) for q in questions])
    lengths = packed.attention_mask.sum(1)
    for kept in ([0], [1], [0, 1]):  # rows of length 0 carry no loss
        rows = torch.zeros(2, dtype=torch.bool)
        rows[kept] = True
        loss = step_lm_loss(model, packed.input_ids, hidden, prompts, lengths * rows, prm.tag_id)
        logits = model.forward_dense(packed.input_ids, packed.attention_mask)
        terms = [torch.nn.functional.cross_entropy(logits[r, t - 1], packed.input_ids[r, t])
                 for r in kept for t in range(int(prompts[r]), int(lengths[r]))
                 if packed.input_ids[r, t] != prm.tag_id]
        assert len(terms) == sum(len(prm.tokenizer.encode("\n".join(solutions[r]) + "\n",
                                                          add_special_tokens=False).ids) for r in kept)
        torch.testing.assert_close(loss, torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)
    assert step_lm_loss(model, packed.input_ids, hidden, prompts, lengths * 0, prm.tag_id) == 0
