"""Tiny policy and PRM checkpoints of the built-in task, trained for seconds, for tests.

``tiny_policy(directory)`` trains a 2-layer policy for 30 steps and saves it;
``tiny_prm(directory, policy)`` fine-tunes it into a value-head PRM on labels from the
step checker (:func:`checked_labels`). Barely trained, they still run every code path of
the search layer on the real task format.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ponder.models import CausalLM, ModelConfig, save_pretrained
from ponder.tasks import check_step, split
from ponder.train import PolicyTrainConfig, save_policy, train_policy
from ponder.train.prm import LabeledSolution, PRMTrainConfig, save_prm, train_prm

TINY_POLICY = PolicyTrainConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                                batch_size=8, lr=1e-2, warmup_steps=5, steps=30, train_problems=200, seed=1)


def checked_labels(n: int) -> list[LabeledSolution]:
    """Reference solutions of the first ``n`` training problems, the first step of every
    second one made wrong, each step labelled 4/4 while every step so far checks, else 0/4."""
    labeled = []
    for i, problem in enumerate(split("train", n)):
        steps = list(problem.steps)
        if i % 2:
            left, right = steps[0].split(" = ")
            steps[0] = f"{left} = {int(right) + 1}"
        ok = [check_step(s) for s in steps[:-1]]
        values = [4 * all(ok[:j + 1]) for j in range(len(ok))] + [4 * all(ok)]
        labeled.append(LabeledSolution(problem.prompt, tuple(steps), tuple(values), 4))
    return labeled


def other_vocabulary_lm(directory: Path) -> Path:
    """An untrained 1-layer LM of a 50-token vocabulary, not the task's 39."""
    other = CausalLM(ModelConfig("llama", vocab_size=50, hidden_size=32, intermediate_size=64, num_layers=1,
                                 num_heads=2, num_kv_heads=1, tie_word_embeddings=True))
    other.reset_parameters(torch.Generator().manual_seed(0))
    return save_pretrained(other, directory)


def tiny_policy(directory: Path) -> Path:
    model, _ = train_policy(TINY_POLICY)
    return save_policy(model, directory)


def tiny_prm(directory: Path, policy: Path) -> Path:
    config = PRMTrainConfig(epochs=1, batch_size=16)
    prm, _ = train_prm(policy, checked_labels(32), config)
    return save_prm(prm, directory, config)
