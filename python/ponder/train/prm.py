"""Train the built-in task's tiny PRM on Monte-Carlo roll-out labels from the policy.

The labels are those of the compute-optimal scaling paper's appendix (after
Math-Shepherd): for each training problem the policy samples ``samples`` solutions at
temperature 1; after each of their steps, ``rollouts`` completions are sampled from the
prefix, and the step's soft label is the fraction the task's checker accepts. A final
step (the ``"Answer: N"`` line) is labelled by the checker itself, 1 or 0.

The same roll-outs give the labels of a *prover* (Setlur et al., 2024, PAVs): the
value of a best-of-K policy (the answer is right if any of K independent completions
is) is estimated without bias from ``c`` right completions out of ``R`` as
``1 - C(R - c, K) / C(R, K)``; K = 1 is the plain Monte-Carlo value. A PRM trained on
those labels is the prover value model that :class:`ponder.prm.ProgressScorer` turns
into the advantage term of ``Q + alpha * A``. The prover may also be a distinct policy:
:func:`prover_rollout_labels` relabels the policy's solutions by its roll-outs.

The PRM starts from the weights of an LM of the task's tokenizer: the policy's, or, as
for the shipped PRM and prover, an LM trained on from the policy (``ponder train policy
--init``), which is surer of the arithmetic and so more surprised by the policy's slips.
It gets a new value head that also reads how surprised the LM head is by the steps
(:class:`~ponder.prm.heads.SurprisalValueHead`: ``score.weight``, ``score.bias``,
``score.surprise``), reads the ``ponder-arith`` format (a ``<step>`` tag after each
step, where the score is read) and is trained with binary cross-entropy against the soft
labels at every tag. The checkpoint loads with ``ponder.load_prm(path)``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ponder.builtin import MAX_STEP_TOKENS, MAX_STEPS, task_checker, task_policy
from ponder.models import CausalLM, save_pretrained
from ponder.prm import PRM
from ponder.prm.heads import SurprisalValueHead
from ponder.prm.surprise import SURPRISE_FEATURES
from ponder.search import MonteCarloVerifier, Sampling, Spend, best_of_value
from ponder.tasks import ArithmeticTask, Problem
from ponder.tasks import tokenizer as task_tokenizer
from ponder.train.optim import Optimisation, Optimiser
from ponder.train.policy import load_task_lm

__all__ = ["RolloutConfig", "PRMTrainConfig", "LabeledSolution", "rollout_labels", "prover_rollout_labels",
           "prover_labels", "save_labels", "load_labels", "train_prm", "step_lm_loss", "save_prm"]


@dataclass(frozen=True)
class LabeledSolution:
    """A sampled solution and what the roll-outs after each of its steps found.

    question : the problem's prompt
    steps : the solution's steps (the last is the ``"Answer: N"`` line when it finished)
    correct : of ``rollouts`` completions after each step, how many the checker accepted
        (for a final step: ``rollouts`` if the solution is right, else 0)
    rollouts : completions sampled per step
    """

    question: str
    steps: tuple[str, ...]
    correct: tuple[int, ...]
    rollouts: int


def prover_labels(solution: LabeledSolution, best_of: int = 1) -> list[float]:
    """Each step's value under the best-of-``best_of`` policy, unbiased from the roll-out counts
    (:func:`~ponder.search.verifier.best_of_value`); ``best_of=1`` gives ``c / R``."""
    return [best_of_value(c, solution.rollouts, best_of) for c in solution.correct]


@dataclass(frozen=True)
class RolloutConfig:
    """Which problems are labelled and how many samples and roll-outs each gets."""

    problems: int = 5500        # the first N of the training split
    samples: int = 4            # solutions sampled per problem
    rollouts: int = 4           # completions per step
    temperature: float = 1.0
    prompts_per_batch: int = 48  # problems searched together (KV cache: about 1.3k sequences)
    seed: int = 0


def rollout_labels(model: CausalLM, tokenizer, problems: Sequence[Problem], config: RolloutConfig = RolloutConfig(),
                   log: Callable[[str], None] | None = None) -> list[LabeledSolution]:
    """Sample ``config.samples`` solutions of each problem and label every step by roll-outs.

    Problems are processed ``prompts_per_batch`` at a time; within a batch every
    solution advances one step at a time and the roll-outs of all of them run as one
    batch of forks (:class:`~ponder.search.MonteCarloVerifier`), freed after counting.
    """
    labeled: list[LabeledSolution] = []
    sampling = Sampling(temperature=config.temperature)
    start = time.perf_counter()
    for first in range(0, len(problems), config.prompts_per_batch):
        batch = list(problems[first:first + config.prompts_per_batch])
        policy = task_policy(model, tokenizer, cache_tokens=1 << 18)
        verifier = MonteCarloVerifier(policy, task_checker(batch), k=config.rollouts, sampling=sampling,
                                      seed=config.seed + first)
        spend = Spend()
        roots = policy.start([p.prompt for p in batch], spend)
        branches = [s.branch for group in policy.expand(roots, config.samples, sampling, config.seed + first, spend)
                    for s in group]
        for root in roots:
            policy.free(root)
        live = [(b, []) for b in branches]  # each solution with its labels so far (right roll-outs per step)
        while live:
            values = verifier.score([b for b, _ in live], spend)
            advancing = []
            for (branch, history), value in zip(live, values.tolist()):
                # A step of only the end-of-sequence token adds no step: its verdict replaces the last label.
                history = history[:len(branch.steps) - 1] + [round(value * config.rollouts)]
                if branch.finished:
                    if branch.steps:  # (a solution of no steps has nothing to label)
                        labeled.append(LabeledSolution(batch[branch.prompt].prompt, tuple(branch.steps),
                                                       tuple(history), config.rollouts))
                    policy.free(branch)
                else:
                    advancing.append((branch, history))
            nexts = policy.expand([b for b, _ in advancing], 1, sampling, config.seed + first, spend)
            live = []
            for (parent, history), (child,) in zip(advancing, nexts):
                policy.free(parent)
                live.append((child.branch, history))
        if log is not None:
            log(f"labelled {first + len(batch):5d}/{len(problems)} problems, {len(labeled)} solutions, "
                f"{spend.generated_tokens} tokens sampled in the last batch, {time.perf_counter() - start:6.0f} s")
    return labeled


def prover_rollout_labels(prover: CausalLM, tokenizer, labeled: Sequence[LabeledSolution],
                          problems: Sequence[Problem], config: RolloutConfig = RolloutConfig(),
                          prefixes_per_batch: int = 1024,
                          log: Callable[[str], None] | None = None) -> list[LabeledSolution]:
    """The policy's solutions relabelled by roll-outs of a distinct *prover* policy ``prover``.

    A PAV's advantage is progress under a prover policy mu (Setlur et al., 2024): the value
    of each prefix of the *policy's* solutions when *mu* completes it. So the solutions
    stay the policy's (``labeled``, from :func:`rollout_labels`), and after each of their
    steps ``config.rollouts`` completions are sampled from ``prover`` at
    ``config.temperature``; the final step keeps the checker's verdict. A prefix shared
    by several solutions is rolled out once. ``problems`` must hold every solution's
    question (the checker needs its answer).

    Each prefix starts as a prompt of its whole text (question and steps so far), so
    mu's KV cache needs no tree of the policy's solutions; ``prefixes_per_batch`` prefixes
    are rolled out together.
    """
    by_question = {p.prompt: p for p in problems}
    missing = sorted({s.question for s in labeled} - by_question.keys())
    if missing:
        raise ValueError(f"the problems given lack {len(missing)} of the labelled questions, e.g. {missing[0]!r}")
    task = ArithmeticTask()
    prefixes: dict[tuple[str, tuple[str, ...]], int | None] = {}  # (question, steps so far) -> right roll-outs
    for solution in labeled:
        for t in range(1, len(solution.steps)):
            prefixes.setdefault((solution.question, solution.steps[:t]), None)
    keys = list(prefixes)
    sampling = Sampling(temperature=config.temperature)
    # KV room per prefix: its prompt (question and steps, under 256 tokens) and the longest roll-outs
    room = 256 + config.rollouts * MAX_STEPS * MAX_STEP_TOKENS
    start = time.perf_counter()
    for first in range(0, len(keys), prefixes_per_batch):
        batch = keys[first:first + prefixes_per_batch]
        policy = task_policy(prover, tokenizer, cache_tokens=prefixes_per_batch * room, prompt_template="{question}")
        # the roll-out's own steps end in the answer line the checker reads
        checker = task_checker([by_question[question] for question, _ in batch])
        verifier = MonteCarloVerifier(policy, checker, k=config.rollouts, sampling=sampling, seed=config.seed + first)
        spend = Spend()
        roots = policy.start([task.format_prompt(by_question[question]) + task.format_solution(steps)
                              for question, steps in batch], spend)
        for key, value in zip(batch, verifier.score(roots, spend).tolist()):
            prefixes[key] = round(value * config.rollouts)
        for root in roots:
            policy.free(root)
        if log is not None:
            log(f"rolled out {first + len(batch):6d}/{len(keys)} prefixes under the prover, "
                f"{time.perf_counter() - start:6.0f} s")
    relabelled = []
    for s in labeled:
        steps = tuple(prefixes[(s.question, s.steps[:t])] for t in range(1, len(s.steps)))
        verdict = config.rollouts if s.correct[-1] else 0  # the last step's label is the checker's
        relabelled.append(LabeledSolution(s.question, s.steps, steps + (verdict,), config.rollouts))
    return relabelled


def save_labels(labeled: Sequence[LabeledSolution], path: str | Path) -> Path:
    """Write labelled solutions as JSON lines (one solution a line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for solution in labeled:
            f.write(json.dumps(asdict(solution)) + "\n")
    return path


def load_labels(path: str | Path) -> list[LabeledSolution]:
    """Read what :func:`save_labels` wrote."""
    with open(path) as f:
        return [LabeledSolution(d["question"], tuple(d["steps"]), tuple(d["correct"]), d["rollouts"])
                for d in map(json.loads, f)]


@dataclass(frozen=True)
class PRMTrainConfig(Optimisation):
    """The labels and the optimisation; the model's shape is that of the LM it starts from."""

    best_of: int = 1  # label by the best-of-K prover's value (1: the policy's own value)
    epochs: int = 3
    lr: float = 3e-4  # low: keep the policy's arithmetic, which the PRM's checks build on
    warmup_steps: int = 20
    minutes: float = 15.0
    lm_weight: float = 1.0  # next-token loss on the right solutions' steps, beside the value loss


def train_prm(start: str | Path, labeled: Sequence[LabeledSolution], config: PRMTrainConfig = PRMTrainConfig(),
              log: Callable[[str], None] | None = None) -> tuple[PRM, list[float]]:
    """Fine-tune the LM at ``start`` into a value-head PRM on ``labeled``: the policy whose
    roll-outs labelled them, or an LM of the same tokenizer trained further on the task
    (``ponder train policy --init``), whose surer arithmetic makes the policy's slips stand
    out in the surprise features (:mod:`ponder.prm.surprise`).

    The loss is the binary cross-entropy of the value head at every tag (its surprise
    features are inputs: no gradient flows through them), plus
    ``config.lm_weight`` times the next-token loss of the right solutions' steps
    (:func:`step_lm_loss`). Returns the PRM (eval mode) and the binary cross-entropy of
    each optimizer step.
    Batches hold solutions of similar length (sorted, then shuffled as whole batches).
    """
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = task_tokenizer.build_tokenizer()
    model = load_task_lm(start)
    weight = torch.nn.Parameter(torch.zeros(1, model.config.hidden_size))
    bias = torch.nn.Parameter(torch.zeros(1))
    surprise_weight = torch.nn.Parameter(torch.zeros(1, SURPRISE_FEATURES))
    prm = PRM(model, tokenizer, "ponder-arith", SurprisalValueHead(weight, bias, surprise_weight))
    targets = [torch.tensor(prover_labels(s, config.best_of)) for s in labeled]
    prompt_lengths = torch.tensor([len(prm.encode_prompt(s.question)) for s in labeled])  # where the steps start
    right = torch.tensor([s.correct[-1] > 0 for s in labeled])
    order = sorted(range(len(labeled)), key=lambda i: sum(map(len, labeled[i].steps)))
    batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    total = config.epochs * len(batches)
    params = [*model.parameters(), weight, bias, surprise_weight]
    optimiser = Optimiser(params, config, total)
    model.train()
    losses: list[float] = []
    for step in range(total):
        if step % len(batches) == 0:
            rng.shuffle(batches)
        if optimiser.out_of_time():
            break
        rows = batches[step % len(batches)]
        packed = prm.pack([labeled[i].question for i in rows], [list(labeled[i].steps) for i in rows])
        hidden = model.dense_hidden(packed.input_ids, packed.attention_mask)
        with torch.no_grad():
            surprise = prm.dense_surprise(packed, hidden)
        logits = prm.head.logits(hidden[packed.positions[:, 0], packed.positions[:, 1]], surprise)[:, 0]
        target = torch.stack([targets[rows[i]][j] for i, j in zip(packed.positions[:, 0].tolist(),
                                                                  packed.steps.tolist())])
        bce = F.binary_cross_entropy_with_logits(logits, target)
        lm = torch.zeros(())
        if config.lm_weight:
            # only the right solutions: the PRM should not learn the policy's slips
            lengths = packed.attention_mask.sum(1) * right[rows]
            lm = step_lm_loss(model, packed.input_ids, hidden, prompt_lengths[rows], lengths, prm.tag_id)
        lr = optimiser.step(step, bce + config.lm_weight * lm)
        losses.append(bce.item())
        if log is not None and (step % 50 == 0 or step == total - 1):
            log(f"step {step:5d}/{total}  bce {losses[-1]:.4f}  lm {lm.item():.4f}  lr {lr:.2e}  "
                f"{optimiser.elapsed_s:6.0f} s")
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return prm, losses


def step_lm_loss(model: CausalLM, input_ids: torch.Tensor, hidden: torch.Tensor, prompt_lengths: torch.Tensor,
                  lengths: torch.Tensor, tag_id: int) -> torch.Tensor:
    """Next-token cross-entropy over the solution tokens of a packed batch.

    input_ids int64 [S, L], hidden [S, L, H]; prompt_lengths, lengths int64 [S]: where each
    row's solution starts and ends (rows of length 0 are left out). The targets are the
    steps' own tokens, not the prompt, the padding or the tags, which the policy never
    writes. Beside the value loss it keeps the arithmetic the policy learned, which
    checking a step needs, from washing out.
    """
    position = torch.arange(1, input_ids.shape[1])
    targets = input_ids[:, 1:]
    mask = (position >= prompt_lengths[:, None]) & (position < lengths[:, None]) & (targets != tag_id)
    if not mask.any():
        return hidden.new_zeros(())
    logits = F.linear(hidden[:, :-1][mask], model.output_weight)
    return F.cross_entropy(logits.float(), targets[mask])


def save_prm(prm: PRM, directory: str | Path, config: PRMTrainConfig | None = None,
             rollouts: RolloutConfig | None = None, prover_policy: str | None = None) -> Path:
    """Write the PRM (decoder + ``score.weight``/``score.bias``/``score.surprise``), the task tokenizer and the configs
    (``prover_policy``: the name of the policy whose roll-outs labelled it, when not the policy's own)."""
    head = prm.head
    directory = save_pretrained(prm.model, directory, extra={"score.weight": head.weight, "score.bias": head.bias,
                                                             "score.surprise": head.surprise_weight})
    task_tokenizer.save(directory)
    info = {"prm": asdict(config) if config else None, "rollouts": asdict(rollouts) if rollouts else None,
            "prover_policy": prover_policy}
    (directory / "ponder_train.json").write_text(json.dumps(info, indent=2) + "\n")
    return directory
