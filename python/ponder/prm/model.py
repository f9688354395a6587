"""A process reward model: a Llama-family checkpoint, its tokenizer, a text format and a scoring head.

:func:`load_prm` builds a :class:`PRM` from a Hugging Face checkpoint directory. The PRM
turns questions and steps into token ids (:meth:`PRM.encode_prompt`,
:meth:`PRM.encode_step`) and scores them either from scratch (:meth:`PRM.score`, one
batched dense forward over whole solutions, as search pipelines without a KV tree do)
or incrementally on a forked KV tree (:meth:`PRM.scorer`, see
:mod:`ponder.prm.incremental`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ponder import ops
from ponder.models import CausalLM, load_model, load_tokenizer
from ponder.prm.formats import PRMFormat, resolve_format
from ponder.prm.heads import ScoreHead, TagPairHead, load_linear_head, load_surprisal_value_head
from ponder.prm.surprise import running_surprise, step_surprise, surprise_tokens

__all__ = ["PRM", "DenseBatch", "EncodedStep", "load_prm", "AGGREGATES"]

AGGREGATES = ("last", "min", "prod", "mean")


@dataclass(frozen=True)
class EncodedStep:
    """A step's PRM token ids (text, tag, separator), the index among them where its score is read,
    and how many of them are the step's text (the first ``text_length``)."""

    ids: list[int]
    score_at: int
    text_length: int


@dataclass(frozen=True)
class DenseBatch:
    """Whole solutions packed for one dense PRM forward (see :meth:`PRM.pack`).

    Attributes
    ----------
    input_ids, attention_mask : int64 [S, L], right-padded with 0
    positions : int64 [P, 2], (solution, position) of each scored step's score
    steps : int64 [P], the index of that step within its solution
    surprise_rows : int64 [N, 2], (solution, position) of each position predicting a token
        that a scored step's surprise reads (:mod:`ponder.prm.surprise`)
    surprise_targets : int64 [N], the token each of those positions predicts
    surprise_steps : int64 [N], the row of ``positions`` (the scored step) it belongs to
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
    steps: torch.Tensor
    surprise_rows: torch.Tensor
    surprise_targets: torch.Tensor
    surprise_steps: torch.Tensor

    def last_steps(self) -> torch.Tensor:
        """int64 [S]: for each solution, the row of ``positions`` of its last scored step (-1 if none)."""
        last = torch.full((self.input_ids.shape[0],), -1, dtype=torch.int64)
        last[self.positions[:, 0]] = torch.arange(self.positions.shape[0])  # later rows overwrite earlier
        return last


class PRM:
    """A process (or outcome) reward model on ponder's model runner.

    Parameters
    ----------
    model : the decoder (with an LM head for a tag-pair head)
    tokenizer : a ``tokenizers.Tokenizer``
    format : a :class:`~ponder.prm.formats.PRMFormat` or the name of a preset
    head : the :class:`~ponder.prm.heads.ScoreHead`
    outcome : True for an outcome reward model: only a solution's final step is scored

    Raises
    ------
    ValueError
        The format's tag is not one token of the tokenizer's vocabulary, or its separator
        or prompt template cannot be tokenized without unknown tokens; or the head reads
        surprise (every step's) but the model has no LM head or is an outcome model.
    """

    def __init__(self, model: CausalLM, tokenizer, format: str | PRMFormat, head: ScoreHead, *,
                 outcome: bool = False):
        if head.reads_surprise and (outcome or not model.has_lm_head):
            raise ValueError("a head that reads surprise needs the model's LM head and every step scored: "
                             f"got outcome={outcome}, LM head {'present' if model.has_lm_head else 'absent'}")
        self.model = model
        self.tokenizer = tokenizer
        self.format = resolve_format(format)
        self.head = head
        self.outcome = outcome
        self.tag_id = None if self.format.tag is None else self.token_id(self.format.tag, "tag")
        self.separator_ids = self._encode_known(self.format.separator, "separator")
        self._encode_known(self.format.prompt.format(question=""), "prompt template")

    # -- tokens ------------------------------------------------------------------------
    def token_id(self, token: str, role: str) -> int:
        """The id of the vocabulary entry ``token``; a clear error when the tokenizer lacks it."""
        return _vocab_id(self.tokenizer, token, role, self.format.name, self.model.config.vocab_size)

    def _encode_known(self, text: str, role: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        unknown = self._unknown_id()
        if unknown is not None and unknown in ids:
            raise ValueError(f"the PRM format {self.format.name!r} has a {role} {text!r} that the tokenizer cannot "
                             "encode without unknown tokens")
        return ids

    def _unknown_id(self) -> int | None:
        model = self.tokenizer.model
        unk = getattr(model, "unk_token", None)
        return None if unk is None else self.tokenizer.token_to_id(unk)

    def encode_prompt(self, question: str) -> list[int]:
        """The PRM token ids of a question in the format's prompt (with the tokenizer's special tokens)."""
        ids = self.tokenizer.encode(self.format.prompt.format(question=question)).ids
        if not ids:
            raise ValueError("the PRM prompt encodes to no tokens")
        return ids

    def encode_step(self, step: str) -> EncodedStep:
        """The PRM token ids a step appends: its text, the tag, the separator; and where its score is read."""
        if not isinstance(step, str):
            raise TypeError(f"a step must be a str, got {type(step).__name__}")
        ids = self.tokenizer.encode(step, add_special_tokens=False).ids
        text_length = len(ids)
        if self.tag_id is not None:
            ids.append(self.tag_id)
        if not ids:
            raise ValueError("an empty step in a format without a tag has no token to read a score at")
        return EncodedStep(ids + self.separator_ids, len(ids) - 1, text_length)

    # -- scores ------------------------------------------------------------------------
    def step_scores(self, hidden: torch.Tensor, solution: torch.Tensor, prior_value: torch.Tensor,
                    prior_count: torch.Tensor, aggregate: str, surprise: torch.Tensor | None = None) -> ops.StepScores:
        """Scores of P steps from their hidden states [P, hidden_size], aggregated per solution (see ops.step_scores).

        ``surprise``: float32 [P, 2], the surprise features, for a head that reads them.
        """
        with torch.inference_mode():
            logits = self.head.logits(hidden, surprise) if self.head.reads_surprise else self.head.logits(hidden)
        rows = torch.arange(logits.shape[0], dtype=torch.int64, device=logits.device)
        return ops.step_scores(logits, rows, solution.to(logits.device), prior_value.to(logits.device),
                               prior_count.to(logits.device), head=self.head.kind, good=self.head.good,
                               bad=self.head.bad, aggregate=aggregate)

    def score(self, questions: Sequence[str], solutions: Sequence[Sequence[str]], *,
              aggregate: str = "last") -> tuple[list[torch.Tensor], torch.Tensor]:
        """Score whole solutions from scratch in one padded dense forward (no KV cache).

        Parameters
        ----------
        questions : S questions
        solutions : S lists of steps (strings); solution ``i`` answers ``questions[i]``
        aggregate : how step scores combine into a solution score (``last``, ``min``, ``prod``, ``mean``)

        Returns
        -------
        (step_scores, values): S float32 tensors [steps of solution i] (for an outcome
        model, NaN except at the final step), and float32 [S], the aggregated score of
        each solution (NaN for a solution with no scored step).
        """
        check_aggregate(aggregate)
        batch = self.pack(questions, solutions)
        device = self.model.device
        with torch.inference_mode():
            hidden = self.model.dense_hidden(batch.input_ids.to(device), batch.attention_mask.to(device))
            rows = batch.positions.to(device)
            zeros = torch.zeros(len(solutions))
            surprise = self.dense_surprise(batch, hidden) if self.head.reads_surprise else None
            result = self.step_scores(hidden[rows[:, 0], rows[:, 1]], batch.positions[:, 0], zeros, zeros.long(),
                                      aggregate, surprise)
        per_solution = [torch.full((len(steps),), float("nan")) for steps in solutions]
        for i, j, score in zip(batch.positions[:, 0].tolist(), batch.steps.tolist(), result.scores.cpu().tolist()):
            per_solution[i][j] = score
        values = torch.where(result.count.cpu() > 0, result.value.cpu(), torch.tensor(float("nan")))
        return per_solution, values

    def dense_surprise(self, batch: "DenseBatch", hidden: torch.Tensor) -> torch.Tensor:
        """float32 [P, 2]: the surprise features of a packed batch's scored steps, from the final
        hidden states [S, L, hidden_size] of its dense forward (see :mod:`ponder.prm.surprise`)."""
        rows = batch.surprise_rows.to(hidden.device)
        logits = F.linear(hidden[rows[:, 0], rows[:, 1]], self.model.output_weight)
        count = batch.positions.shape[0]
        surprise = step_surprise(logits, batch.surprise_targets, batch.surprise_steps, count)
        return running_surprise(surprise, batch.positions[:, 0], torch.zeros(batch.input_ids.shape[0]))

    def pack(self, questions: Sequence[str], solutions: Sequence[Sequence[str]]) -> "DenseBatch":
        """Whole solutions as one right-padded batch of PRM token ids, where each scored step's score
        is read, and the tokens its surprise reads.

        For an outcome model only each solution's final step is scored.
        """
        if len(questions) != len(solutions):
            raise ValueError(f"{len(questions)} questions but {len(solutions)} solutions: expected one each")
        sequences, positions, steps_scored = [], [], []
        surprise_rows, surprise_targets, surprise_steps = [], [], []
        for i, (question, steps) in enumerate(zip(questions, solutions)):
            ids = self.encode_prompt(question)
            for j, step in enumerate(steps):
                encoded = self.encode_step(step)
                if not self.outcome or j == len(steps) - 1:
                    for t in surprise_tokens(encoded.text_length):
                        surprise_rows.append((i, len(ids) + t - 1))
                        surprise_targets.append(encoded.ids[t])
                        surprise_steps.append(len(positions))
                    positions.append((i, len(ids) + encoded.score_at))
                    steps_scored.append(j)
                ids += encoded.ids
            sequences.append(ids)
        length = max(len(s) for s in sequences)
        input_ids = torch.zeros(len(sequences), length, dtype=torch.int64)
        mask = torch.zeros(len(sequences), length, dtype=torch.int64)
        for i, ids in enumerate(sequences):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            mask[i, :len(ids)] = 1
        return DenseBatch(input_ids, mask, torch.tensor(positions, dtype=torch.int64).reshape(-1, 2),
                          torch.tensor(steps_scored, dtype=torch.int64),
                          torch.tensor(surprise_rows, dtype=torch.int64).reshape(-1, 2),
                          torch.tensor(surprise_targets, dtype=torch.int64),
                          torch.tensor(surprise_steps, dtype=torch.int64))

    def scorer(self, max_tokens: int | None = None, *, num_blocks: int | None = None, max_bytes: int | None = None,
               block_size: int = 16, aggregate: str = "last"):
        """An :class:`~ponder.prm.incremental.IncrementalScorer` with a new KV cache of this size."""
        from ponder.prm.incremental import IncrementalScorer

        cache = self.model.new_cache(max_tokens, num_blocks=num_blocks, max_bytes=max_bytes, block_size=block_size)
        return IncrementalScorer(self, cache, aggregate=aggregate)


def check_aggregate(aggregate: str) -> None:
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")


HEADS = ("pair", "classifier", "value", "value-surprisal")


def load_prm(path: str | Path, *, format: str | PRMFormat = "ponder-arith", head: str | None = None,
             outcome: bool = False, head_prefix: str = "score.", good_class: int = 1, tokenizer=None,
             device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             backend: str | None = None) -> PRM:
    """Load a process (or outcome) reward model from a Hugging Face checkpoint directory.

    Parameters
    ----------
    path : config.json, ``*.safetensors`` and (unless ``tokenizer`` is given) tokenizer.json
    format : a preset name from :data:`ponder.prm.formats.FORMATS` or a PRMFormat
    head : ``"pair"`` (LM-head logits of the format's good/bad tokens at the tag),
        ``"classifier"`` (2-class head stored under ``head_prefix``; class ``good_class`` is
        good), ``"value"`` (one logit under ``head_prefix``, sigmoid) or ``"value-surprisal"``
        (a value head that also reads the LM head's surprise at each step, see
        :class:`~ponder.prm.heads.SurprisalValueHead`); default the format's
    outcome : an outcome reward model: one score, at the final step
    tokenizer : a ``tokenizers.Tokenizer`` to use instead of the directory's tokenizer.json
    device, dtype, backend : as for :func:`ponder.load_model`

    Raises
    ------
    ValueError
        The head does not match the checkpoint (no LM head for ``pair``, no or a wrongly
        shaped head under ``head_prefix`` for the others), or the format's tag or tokens
        are missing from the tokenizer.
    FileNotFoundError
        No checkpoint or no tokenizer.json in ``path``.
    """
    fmt = resolve_format(format)
    head = fmt.head if head is None else head
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    path = Path(path)
    if tokenizer is None:
        tokenizer = load_tokenizer(path)
    pair, surprisal = head == "pair", head == "value-surprisal"
    try:
        model = load_model(path, device=device, dtype=dtype, backend=backend, lm_head=pair or surprisal,
                           other_weights=() if pair else (head_prefix,))
    except ValueError as error:
        if surprisal and "lm_head" in str(error):
            raise ValueError(f"head='value-surprisal' reads the surprise of the model's LM head: {error} "
                             "(head='value' reads a plain value head)") from error
        raise
    if pair:
        if fmt.good_token is None or fmt.bad_token is None or fmt.tag is None:
            raise ValueError(f"head='pair' needs a format with a tag, a good_token and a bad_token; "
                             f"{fmt.name!r} has tag={fmt.tag!r}, good_token={fmt.good_token!r}, "
                             f"bad_token={fmt.bad_token!r}")
        vocab = model.config.vocab_size
        score_head: ScoreHead = TagPairHead(model, _vocab_id(tokenizer, fmt.good_token, "good token", fmt.name, vocab),
                                            _vocab_id(tokenizer, fmt.bad_token, "bad token", fmt.name, vocab))
    elif surprisal:
        score_head = load_surprisal_value_head(path, head_prefix, model)
    else:
        score_head = load_linear_head(path, head_prefix, model, good_class=good_class)
        expected = 2 if head == "classifier" else 1
        if score_head.num_classes != expected:
            raise ValueError(f"head={head!r} needs {expected} output(s) under {head_prefix!r} but the checkpoint's "
                             f"head has {score_head.num_classes} (use head={'value' if expected == 2 else 'classifier'!r})")
    return PRM(model, tokenizer, fmt, score_head, outcome=outcome)


def _vocab_id(tokenizer, token: str, role: str, format_name: str, vocab_size: int) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the PRM format {format_name!r} needs the {role} {token!r} as one token, but the "
                         "tokenizer's vocabulary has no such entry (wrong format preset for this checkpoint?)")
    if token_id >= vocab_size:
        raise ValueError(f"the {role} {token!r} has id {token_id}, outside the model's vocabulary of {vocab_size}")
    return token_id
