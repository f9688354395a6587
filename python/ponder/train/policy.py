"""Train the built-in task's tiny policy: a small Llama-architecture model, on CPU, in minutes.

Each training example is a problem of the task's training split at a level drawn
uniformly from :data:`~ponder.tasks.LEVELS`, written as the policy will see it::

    <bos>Q: Compute (17 + 8) * 3 - 12.\\nA:\\n17 + 8 = 25\\n25 * 3 = 75\\n75 - 12 = 63\\nAnswer: 63\\n<eos>

with a solution in one of :data:`TRAINED_STYLES` (the usual evaluation order, operands
of ``+`` and ``*`` either way round), so that the correct solutions the policy learns
vary in form. The loss is the cross-entropy of the solution and ``<eos>`` tokens (the
prompt is context only). Training stops after ``steps`` optimizer steps or ``minutes``
of wall time, whichever comes first; a small model trained for minutes stays imperfect,
and more so on the harder levels, which is what the search methods need to show their
effects. Training can also go on from a checkpoint: the shipped PRM and prover start
from the policy trained on for 6000 more steps, an LM that slips far less than the
policy it checks.

:func:`train_policy` returns the model and the loss history; :func:`save_policy` writes a
Hugging Face checkpoint directory (config.json, model.safetensors, tokenizer.json) that
:func:`ponder.load_model` and transformers both load.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ponder.models import CausalLM, ModelConfig, load_model, save_pretrained
from ponder.tasks import LEVELS, STYLES, ArithmeticTask, sample_solution, split
from ponder.tasks import tokenizer as task_tokenizer
from ponder.train.optim import Optimisation, Optimiser

__all__ = ["PolicyTrainConfig", "encode_example", "make_batch", "examples_loss", "load_task_lm", "train_policy",
           "save_policy"]

IGNORE = -100  # label of a token that carries no loss
TRAINED_STYLES = tuple(style for style in STYLES if style.order == "left" and not style.regroup and not style.rewrite)
"""The solution styles the policy learns: the usual evaluation order, operands of ``+``
and ``*`` written either way round. A tiny model given minutes learns to pick the
right operands far sooner when the order of steps is fixed, and rewritten lines
(the whole expression on each) make examples three times longer; commuted operands
still give every problem many correct forms."""


@dataclass(frozen=True)
class PolicyTrainConfig(Optimisation):
    """The model's shape, the number of steps and the training problems, and the optimisation.

    The defaults are the shipped policy's: 4800 steps, about 15 minutes on 2 cores. The
    clock limit is a safety stop for slower machines (a run it cuts is not reproducible:
    the schedule then ends by time)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 352
    steps: int = 4800
    train_problems: int | None = None  # the first N of the training split (None: all 20000)


def encode_example(tokenizer, prompt: str, solution: str) -> tuple[list[int], list[int]]:
    """(token ids, labels) of one example: ``<bos>`` prompt, solution, ``<eos>``; the prompt's labels ignored."""
    prompt_ids = tokenizer.encode(prompt).ids  # <bos> first
    solution_ids = tokenizer.encode(solution, add_special_tokens=False).ids + [tokenizer.token_to_id(task_tokenizer.EOS)]
    return prompt_ids + solution_ids, [IGNORE] * len(prompt_ids) + solution_ids


def make_batch(examples: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels), each int64 [B, L], right-padded (pad id 0, label ignored).

    ``labels[b, t]`` is the target of position ``t`` (the next token is predicted from
    position ``t - 1``; the shift happens in the loss).
    """
    length = max(len(ids) for ids, _ in examples)
    input_ids = torch.zeros(len(examples), length, dtype=torch.int64)
    mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, IGNORE)
    for i, (ids, target) in enumerate(examples):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        mask[i, :len(ids)] = 1
        labels[i, :len(target)] = torch.tensor(target)
    return input_ids, mask, labels


def examples_loss(model: CausalLM, examples: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """The mean next-token cross-entropy of a batch of :func:`encode_example` examples (labelled tokens only)."""
    input_ids, mask, labels = make_batch(examples)
    logits = model.forward_dense(input_ids, mask)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE)


BUCKET = 8  # batches drawn together and grouped by length


def _length_bucketed_batches(by_level: dict, levels: list[int], tokenizer, config: PolicyTrainConfig,
                             rng: random.Random):
    """Endless batches of examples; each group of BUCKET batches is cut from one length-sorted draw.

    Solutions run from about 20 to over 300 characters: batching similar lengths
    together halves the padding a step computes over.
    """
    task = ArithmeticTask()
    while True:
        examples = []
        for _ in range(BUCKET * config.batch_size):
            problem = rng.choice(by_level[rng.choice(levels)])
            steps = sample_solution(problem.expression, rng.randrange(2**31), TRAINED_STYLES)
            examples.append(encode_example(tokenizer, task.format_prompt(problem), task.format_solution(steps)))
        examples.sort(key=lambda example: len(example[0]))
        group = [examples[i:i + config.batch_size] for i in range(0, len(examples), config.batch_size)]
        rng.shuffle(group)
        yield from group


def load_task_lm(path: str | Path) -> CausalLM:
    """A checkpoint to train on or roll out (with its LM head), checked to be an LM of the task's tokenizer."""
    model = load_model(path, lm_head=True)
    vocab = task_tokenizer.build_tokenizer().get_vocab_size()
    if model.config.vocab_size != vocab:
        raise ValueError(f"{path} has a vocabulary of {model.config.vocab_size} tokens, the task's tokenizer "
                         f"{vocab}: it must be an LM of the task's tokenizer")
    return model


def train_policy(config: PolicyTrainConfig = PolicyTrainConfig(), log: Callable[[str], None] | None = None,
                 init: str | Path | None = None) -> tuple[CausalLM, list[float]]:
    """Train a policy from scratch, or on from the checkpoint ``init`` (whose shape then
    replaces ``config``'s); returns (model in eval mode, loss per step).

    Deterministic under ``config.seed`` when ``steps`` ends the run before the clock
    matters (the ``minutes`` limit, and the schedule's progress by time, depend on the
    machine).
    """
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = task_tokenizer.build_tokenizer()
    by_level: dict[int, list] = {level: [] for level in LEVELS}
    for problem in split("train", config.train_problems):
        if problem.difficulty.level in by_level:
            by_level[problem.difficulty.level].append(problem)
    levels = [level for level, problems in by_level.items() if problems]
    if init is not None:
        model = load_task_lm(init)
    else:
        model = CausalLM(ModelConfig("llama", vocab_size=tokenizer.get_vocab_size(), hidden_size=config.hidden_size,
                                     intermediate_size=config.intermediate_size, num_layers=config.num_layers,
                                     num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
                                     max_position_embeddings=512, tie_word_embeddings=True))
        model.reset_parameters(torch.Generator().manual_seed(config.seed))
    model.train()
    optimiser = Optimiser(model.parameters(), config, config.steps)
    batches = _length_bucketed_batches(by_level, levels, tokenizer, config, rng)
    losses: list[float] = []
    for step in range(config.steps):
        if optimiser.out_of_time():
            break
        loss = examples_loss(model, next(batches))
        lr = optimiser.step(step, loss)
        losses.append(loss.item())
        if log is not None and (step % 50 == 0 or step == config.steps - 1):
            log(f"step {step:5d}  loss {losses[-1]:.4f}  lr {lr:.2e}  {optimiser.elapsed_s:6.0f} s")
    model.eval()
    return model, losses


def save_policy(model: CausalLM, directory: str | Path, config: PolicyTrainConfig | None = None) -> Path:
    """Write the checkpoint, the task tokenizer and (when given) the training config into ``directory``."""
    directory = save_pretrained(model, directory)
    task_tokenizer.save(directory)
    if config is not None:
        (directory / "ponder_train.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    return directory
