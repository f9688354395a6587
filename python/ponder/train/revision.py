"""Train the built-in task's revision model: the policy fine-tuned to answer again after wrong attempts.

The recipe of the compute-optimal scaling paper (section 6.1, appendix H): the policy
samples ``samples`` solutions of each training problem at temperature 1; solutions
without a well-formed ``"Answer: N"`` line are dropped. Each right solution becomes
the target of one trajectory whose context holds ``n`` wrong ones, ``n`` drawn
uniformly from 0 to 4 (to the number of wrong solutions when fewer). The last wrong
attempt in the context is the one nearest the right solution by character edit
distance, so that the context and the target are related; the others are drawn at
random. The model sees the context in the revision prompt that
:func:`ponder.search.revisions` builds (:func:`~ponder.search.default_revision_prompt`
inside the task's prompt template) and learns to write the target; only the target's
tokens carry loss.

A right solution is often sampled many times; each distinct one is a target once, and
at most ``targets_per_problem`` of them are kept, so that easy problems, where almost
every sample is right, do not crowd out the rest.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ponder.builtin import task_answer, task_checker, task_policy
from ponder.models import CausalLM, load_model
from ponder.search import CheckerVerifier, Sampling, best_of_n
from ponder.search.revisions import default_revision_prompt
from ponder.tasks import ArithmeticTask, Problem
from ponder.tasks import tokenizer as task_tokenizer
from ponder.train.optim import Optimisation, Optimiser
from ponder.train.policy import encode_example, examples_loss, save_policy

__all__ = ["RevisionDataConfig", "RevisionTrainConfig", "Trajectory", "edit_distance", "sample_attempts",
           "revision_trajectories", "revision_example", "train_revision", "save_revision"]

MAX_CONTEXT = 4  # wrong attempts at most in a trajectory's context, as the paper's revision model sees


@dataclass(frozen=True)
class Trajectory:
    """One training example: wrong attempts (oldest first, the nearest to the target last), then the target."""

    question: str
    previous: tuple[str, ...]
    target: tuple[str, ...]  # the right solution's steps


@dataclass(frozen=True)
class RevisionDataConfig:
    """Which problems the policy samples and how many solutions each."""

    problems: int = 20000         # the whole training split, as the paper samples every training question
    samples: int = 16             # solutions sampled per problem
    targets_per_problem: int = 4  # distinct right solutions kept as targets
    temperature: float = 1.0
    prompts_per_batch: int = 250
    seed: int = 0


@dataclass(frozen=True)
class RevisionTrainConfig(Optimisation):
    """Fine-tuning of the policy on the trajectories.

    The revision model needs many steps and many problems: the policy never saw earlier
    attempts in its prompt, and a short fine-tune leaves it worse with them there than
    without; a long one on few problems learns their targets by heart and copies its
    context, wrong answers included. Measured on 300 validation problems, one chain of 8
    attempts each, the chance that an attempt is right after a wrong one / after a right
    one, against samples without attempts in the prompt of the same problems:

    ============================  =================  =================
    trajectories from, steps      after a wrong one  after a right one
    ============================  =================  =================
    4,000 problems, 600 steps     12 % (fresh: 30)   40 % (fresh: 64)
    4,000 problems, 1,200 steps   23 % (34)          55 % (65)
    4,000 problems, 2,400 steps   28 % (31)          72 % (73)
    4,000 problems, 4,800 steps   24 % (29)          80 % (78)
    20,000 problems, 4,800 steps  35 % (35)          78 % (78)
    ============================  =================  =================

    The last is the default (about 4 epochs of 38,788 trajectories); its first attempts
    are right in 61 % of problems against 52 % at 4,000 problems and 2,400 steps. The
    paper's appendix H likewise found checkpoints well past the validation loss's
    minimum revise best.
    """

    steps: int = 4800
    lr: float = 1e-3
    warmup_steps: int = 30
    minutes: float = 40.0  # the 4800 steps take about 27 minutes on 2 cores


def edit_distance(a: str, b: str) -> int:
    """The Levenshtein distance between two strings (unit insertions, deletions and substitutions).

    Myers' bit-vector algorithm in Hyyrö's formulation: one column of the distance table
    is two bit vectors (the +1 and -1 vertical differences) held in Python integers, so a
    pair costs ``len(b)`` steps of a few integer operations whatever ``len(a)`` is.
    """
    if not a or not b:
        return len(a) + len(b)
    matches: dict[str, int] = {}
    for i, character in enumerate(a):
        matches[character] = matches.get(character, 0) | (1 << i)
    ones = (1 << len(a)) - 1
    top = 1 << (len(a) - 1)
    plus, minus, distance = ones, 0, len(a)  # the first column: distances 0..len(a), all steps +1
    for character in b:
        equal = matches.get(character, 0)
        vertical = equal | minus
        horizontal = (((equal & plus) + plus) ^ plus) | equal
        horizontal_plus = (minus | ~(horizontal | plus)) & ones
        horizontal_minus = plus & horizontal
        if horizontal_plus & top:
            distance += 1
        elif horizontal_minus & top:
            distance -= 1
        horizontal_plus = ((horizontal_plus << 1) | 1) & ones  # the top row grows by one per column
        horizontal_minus = (horizontal_minus << 1) & ones
        plus = (horizontal_minus | ~(vertical | horizontal_plus)) & ones
        minus = horizontal_plus & vertical
    return distance


def sample_attempts(model: CausalLM, tokenizer, problems: Sequence[Problem],
                    config: RevisionDataConfig = RevisionDataConfig(),
                    log: Callable[[str], None] | None = None) -> list[list[tuple[tuple[str, ...], bool]]]:
    """For each problem, its sampled solutions with a well-formed answer: (steps, right) each."""
    task = ArithmeticTask()
    sampling = Sampling(temperature=config.temperature)
    attempts: list[list[tuple[tuple[str, ...], bool]]] = []
    for first in range(0, len(problems), config.prompts_per_batch):
        batch = list(problems[first:first + config.prompts_per_batch])
        tokens = config.samples * len(batch) * 128  # a whole solution is at most about 100 tokens
        policy = task_policy(model, tokenizer, cache_tokens=tokens)
        checked = best_of_n(policy, CheckerVerifier(task_checker(batch)), [p.prompt for p in batch], config.samples,
                            answer_of=task_answer, sampling=sampling, seed=config.seed + first, progress=False)
        for prompt_result in checked.results:  # a candidate's score is the checker's verdict, 1 or 0
            attempts.append([(tuple(task.split_steps(c.text)), c.score > 0.5) for c in prompt_result.candidates
                             if c.finished and c.answer is not None])
        if log is not None:
            right = sum(r for problem in attempts for _, r in problem)
            log(f"sampled {len(attempts):5d}/{len(problems)} problems: {sum(map(len, attempts))} well-formed "
                f"solutions, {right} right")
    return attempts


def revision_trajectories(problems: Sequence[Problem], attempts: Sequence[Sequence[tuple[tuple[str, ...], bool]]],
                          targets_per_problem: int = 4, seed: int = 0) -> list[Trajectory]:
    """The training trajectories of the paper's recipe (see the module docstring) from :func:`sample_attempts`."""
    rng = random.Random(seed)
    trajectories = []
    for problem, sampled in zip(problems, attempts):
        rights = list(dict.fromkeys(steps for steps, right in sampled if right))
        wrongs = [steps for steps, right in sampled if not right]
        rng.shuffle(rights)
        for target in rights[:targets_per_problem]:
            count = rng.randint(0, min(MAX_CONTEXT, len(wrongs)))
            previous: list[tuple[str, ...]] = []
            if count:
                text = "\n".join(target)
                nearest = min(range(len(wrongs)), key=lambda i: edit_distance("\n".join(wrongs[i]), text))
                others = wrongs[:nearest] + wrongs[nearest + 1:]
                previous = rng.sample(others, count - 1) + [wrongs[nearest]]
            trajectories.append(Trajectory(problem.prompt, tuple("\n".join(p) for p in previous), target))
    return trajectories


def revision_example(tokenizer, trajectory: Trajectory) -> tuple[list[int], list[int]]:
    """(token ids, labels) of a trajectory as the revision model sees it: the loss on the target only."""
    task = ArithmeticTask()
    prompt = task.prompt_template.format(question=default_revision_prompt(trajectory.question, trajectory.previous))
    return encode_example(tokenizer, prompt, task.format_solution(trajectory.target))


def train_revision(policy_path: str | Path, trajectories: Sequence[Trajectory],
                   config: RevisionTrainConfig = RevisionTrainConfig(),
                   log: Callable[[str], None] | None = None) -> tuple[CausalLM, list[float]]:
    """Fine-tune the policy at ``policy_path`` on ``trajectories``; returns (model in eval mode, loss per step).

    Batches hold trajectories of similar length (sorted, then shuffled as whole batches).
    """
    if not trajectories:
        raise ValueError("no trajectories to train on: the policy sampled no right solution of any problem "
                         "(sample more problems or more solutions each)")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = task_tokenizer.build_tokenizer()
    model = load_model(policy_path)
    examples = sorted((revision_example(tokenizer, t) for t in trajectories), key=lambda e: len(e[0]))
    batches = [examples[i:i + config.batch_size] for i in range(0, len(examples), config.batch_size)]
    optimiser = Optimiser(model.parameters(), config, config.steps)
    model.train()
    losses: list[float] = []
    for step in range(config.steps):
        if step % len(batches) == 0:
            rng.shuffle(batches)
        if optimiser.out_of_time():
            break
        loss = examples_loss(model, batches[step % len(batches)])
        lr = optimiser.step(step, loss)
        losses.append(loss.item())
        if log is not None and (step % 50 == 0 or step == config.steps - 1):
            log(f"step {step:5d}/{config.steps}  loss {losses[-1]:.4f}  lr {lr:.2e}  {optimiser.elapsed_s:6.0f} s")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, losses


def save_revision(model: CausalLM, directory: str | Path, config: RevisionTrainConfig | None = None,
                  data: RevisionDataConfig | None = None) -> Path:
    """Write the revision model like a policy (config, weights, tokenizer) with both training configs."""
    directory = save_policy(model, directory)
    info = {"revision": asdict(config) if config else None, "data": asdict(data) if data else None}
    (directory / "ponder_train.json").write_text(json.dumps(info, indent=2) + "\n")
    return directory
