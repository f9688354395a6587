"""The revision-model trainer: edit distance, the paper's trajectories, a short run that learns, the CLI."""

from __future__ import annotations

import collections
import json
import random

import pytest

from task_models import tiny_policy

import ponder
from ponder.builtin import checkpoint
from ponder.cli import main
from ponder.search.revisions import default_revision_prompt
from ponder.tasks import ArithmeticTask, split
from ponder.tasks import tokenizer as task_tokenizer
from ponder.train.policy import IGNORE
from ponder.train.revision import (MAX_CONTEXT, RevisionDataConfig, RevisionTrainConfig, Trajectory, edit_distance,
                                   revision_example, revision_trajectories, sample_attempts, save_revision,
                                   train_revision)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return tiny_policy(tmp_path_factory.mktemp("policy") / "policy")


def _table_distance(a: str, b: str) -> int:
    """The textbook dynamic programme, to check the bit-vector one against."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def test_edit_distance_is_levenshtein():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == edit_distance("abc", "") == 3
    assert edit_distance("12 + 3 = 15", "12 + 3 = 15") == 0
    rng = random.Random(0)
    for _ in range(400):  # strings longer than 64 characters too: the bit vectors are Python integers
        a = "".join(rng.choice("ab1 \n") for _ in range(rng.randint(0, 100)))
        b = "".join(rng.choice("ab1 \n") for _ in range(rng.randint(0, 100)))
        assert edit_distance(a, b) == _table_distance(a, b) == edit_distance(b, a)


def _attempts(rights: list[str], wrongs: list[str]) -> list[tuple[tuple[str, ...], bool]]:
    return [((text, f"Answer: {i}"), True) for i, text in enumerate(rights)] + \
           [((text, f"Answer: {100 + i}"), False) for i, text in enumerate(wrongs)]


def test_trajectories_follow_the_papers_recipe():
    problems = split("train", 40)
    rng = random.Random(1)
    attempts = []
    for i in range(40):
        rights = [f"{rng.randint(10, 99)} + 1 = {rng.randint(10, 99)}" for _ in range(rng.randint(0, 6))]
        wrongs = [f"{rng.randint(10, 99)} - 2 = {rng.randint(10, 99)}" for _ in range(rng.randint(0, 7))]
        attempts.append(_attempts(rights + rights[:1], wrongs))  # a right solution sampled twice
    trajectories = revision_trajectories(problems, attempts, targets_per_problem=3, seed=4)
    assert trajectories == revision_trajectories(problems, attempts, targets_per_problem=3, seed=4)
    by_question = collections.defaultdict(list)
    for t in trajectories:
        by_question[t.question].append(t)
    counts = collections.Counter()
    for problem, sampled in zip(problems, attempts):
        rights = {steps for steps, right in sampled if right}
        wrongs = ["\n".join(steps) for steps, right in sampled if not right]
        mine = by_question[problem.prompt]
        assert len(mine) == min(3, len(rights))  # distinct targets, at most three
        assert len({t.target for t in mine}) == len(mine) and all(t.target in rights for t in mine)
        for t in mine:
            assert len(t.previous) <= min(MAX_CONTEXT, len(wrongs)) and all(p in wrongs for p in t.previous)
            assert len(set(t.previous)) == len(t.previous) or len(set(wrongs)) < len(wrongs)
            counts[len(t.previous)] += 1
            if t.previous:  # the last one in context is the wrong attempt nearest the target
                target = "\n".join(t.target)
                assert edit_distance(t.previous[-1], target) == min(edit_distance(w, target) for w in wrongs)
    assert set(counts) == set(range(MAX_CONTEXT + 1))  # 0 to 4 wrong attempts in context all occur


def test_revision_example_carries_loss_on_the_target_only():
    tokenizer = task_tokenizer.build_tokenizer()
    trajectory = Trajectory("Compute 7 + 5.", ("7 + 5 = 13\nAnswer: 13",), ("7 + 5 = 12", "Answer: 12"))
    ids, labels = revision_example(tokenizer, trajectory)
    task = ArithmeticTask()
    prompt = task.prompt_template.format(question=default_revision_prompt(trajectory.question, trajectory.previous))
    context = len(tokenizer.encode(prompt).ids)
    assert tokenizer.decode(ids[:context]) == prompt and labels[:context] == [IGNORE] * context
    assert tokenizer.decode(labels[context:]) == "7 + 5 = 12\nAnswer: 12\n"  # then <eos>, skipped in decoding
    assert labels[-1] == tokenizer.token_to_id(task_tokenizer.EOS)


def test_sampled_attempts_are_well_formed_and_checked(policy_dir):
    model = ponder.load_model(policy_dir)
    problems = split("train", 5)
    config = RevisionDataConfig(problems=5, samples=4, prompts_per_batch=3, seed=2)
    attempts = sample_attempts(model, task_tokenizer.build_tokenizer(), problems, config)
    assert len(attempts) == 5 and all(len(sampled) <= 4 for sampled in attempts)
    task = ArithmeticTask()
    for problem, sampled in zip(problems, attempts):
        for steps, right in sampled:
            text = "\n".join(steps)
            assert task.extract_answer(text) is not None and right == task.is_correct(problem, text)
    assert attempts == sample_attempts(model, task_tokenizer.build_tokenizer(), problems, config)


def test_a_short_run_learns_and_saves_a_loadable_model(policy_dir, tmp_path):
    problems = split("train", 16)
    trajectories = [Trajectory(p.prompt, (), tuple(p.steps)) for p in problems]
    config = RevisionTrainConfig(steps=24, batch_size=16, lr=1e-2, warmup_steps=2)
    model, losses = train_revision(policy_dir, trajectories, config)
    assert len(losses) == 24 and losses[-1] < 0.8 * losses[0]  # one batch, seen 24 times
    path = save_revision(model, tmp_path / "revision", config, RevisionDataConfig())
    loaded = ponder.load_model(path)
    assert all(a.equal(b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    info = json.loads((path / "ponder_train.json").read_text())
    assert info["revision"]["steps"] == 24 and info["data"]["samples"] == RevisionDataConfig.samples


def test_cli_trains_a_revision_model(tmp_path, capsys):
    # The shipped policy: a tiny one rarely samples a right solution to build a trajectory on.
    main(["train", "revision", "--policy", str(checkpoint("policy")), "--out", str(tmp_path / "r"),
          "--problems", "6", "--samples", "4", "--steps", "2"])
    out = capsys.readouterr().out
    assert "trajectories" in out and "trained 2 steps" in out
    assert (tmp_path / "r" / "config.json").is_file() and (tmp_path / "r" / "tokenizer.json").is_file()


def test_no_trajectories_is_a_clear_error(policy_dir):
    with pytest.raises(ValueError, match="no trajectories to train on"):
        train_revision(policy_dir, [])
