"""Scoring heads of process reward models: final hidden states at step ends -> head logits.

Every head maps the hidden states ``[P, hidden_size]`` at the P scored positions to
float32 head logits ``[P, C]`` and says how :func:`ponder.ops.step_scores` turns a row
into a score in [0, 1]:

* :class:`TagPairHead` (Math-Shepherd style): the LM-head logits of a "good" and a "bad"
  token; score = softmax over the two, the good one's probability. Only those two rows of
  the output projection are multiplied, not the whole vocabulary.
* :class:`LinearHead` read from the checkpoint (``score.weight`` as transformers'
  ``*ForTokenClassification`` / ``*ForSequenceClassification`` store it, or
  ``score.0.*`` / ``score.2.*`` for a Linear-ReLU-Linear head as Qwen2.5-Math-PRM
  does): two classes (softmax, class ``good_class`` is good) or one logit (sigmoid, a
  value head).
* :class:`SurprisalValueHead`, the built-in PRM's: a value head that also reads how
  surprised the PRM's LM head is by the steps (:mod:`ponder.prm.surprise`); stored as
  ``score.weight`` [1, hidden_size], ``score.bias`` [1] and ``score.surprise`` [1, 2].

A head whose ``reads_surprise`` is True takes the surprise features ``[P, 2]`` as a
second argument of ``logits``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from ponder.models import CausalLM
from ponder.models.loader import read_weights
from ponder.prm.surprise import SURPRISE_FEATURES

__all__ = ["ScoreHead", "TagPairHead", "LinearHead", "SurprisalValueHead", "load_linear_head",
           "load_surprisal_value_head"]


class ScoreHead(Protocol):
    """``logits(hidden)`` and the arguments of :func:`ponder.ops.step_scores` that read them.

    Attributes
    ----------
    kind : ``"pair"`` (softmax over columns ``good`` and ``bad``) or ``"sigmoid"`` (of column ``good``)
    good, bad : column indices into the head logits
    reads_surprise : whether ``logits`` takes the surprise features as well
    """

    kind: str
    good: int
    bad: int
    reads_surprise: bool = False

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states [P, hidden_size] -> float32 head logits [P, C]."""


class TagPairHead(ScoreHead):
    """Softmax over the LM-head logits of two tokens: float32 [P, 2], column 0 good, column 1 bad."""

    kind, good, bad = "pair", 0, 1

    def __init__(self, model: CausalLM, good_id: int, bad_id: int):
        self.weight = model.output_weight.detach()[[good_id, bad_id]]  # [2, hidden_size], a copy
        self.token_ids = (good_id, bad_id)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight).float()


class LinearHead(ScoreHead):
    """A classification head on the hidden state: one Linear, or Linear-ReLU-Linear.

    Parameters
    ----------
    layers : [(weight [out, in], bias [out] or None)], applied in order with ReLU between
    good_class : for two classes, which one means "good"
    """

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor | None]], good_class: int = 1):
        self.layers = layers
        classes = layers[-1][0].shape[0]
        if classes == 1:
            self.kind, self.good, self.bad = "sigmoid", 0, 0
        elif classes == 2:
            if good_class not in (0, 1):
                raise ValueError(f"good_class must be 0 or 1 for a 2-class head, got {good_class}")
            self.kind, self.good, self.bad = "pair", good_class, 1 - good_class
        else:
            raise ValueError(f"a PRM head must have 1 output (value, sigmoid) or 2 (good/bad classes), got {classes}")
        self.num_classes = classes

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        x = hidden
        for i, (weight, bias) in enumerate(self.layers):
            if i:
                x = F.relu(x)
            x = F.linear(x, weight, bias)
        return x.float()


class SurprisalValueHead(ScoreHead):
    """One value logit from the hidden state and the surprise features (sigmoid, as a value head).

    ``logit = hidden @ weight.T + surprise @ surprise_weight.T + bias``

    Parameters
    ----------
    weight : [1, hidden_size]
    bias : [1]
    surprise_weight : [1, 2], for the step's surprise and the solution's surprise so far
        (:mod:`ponder.prm.surprise`)
    """

    kind, good, bad = "sigmoid", 0, 0
    reads_surprise = True
    num_classes = 1

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, surprise_weight: torch.Tensor):
        if weight.dim() != 2 or weight.shape[0] != 1:
            raise ValueError(f"a surprisal value head's weight must be [1, hidden_size], got {list(weight.shape)}")
        if bias.shape != (1,):
            raise ValueError(f"a surprisal value head's bias must be [1], got {list(bias.shape)}")
        if surprise_weight.shape != (1, SURPRISE_FEATURES):
            raise ValueError(f"a surprisal value head's surprise weight must be [1, {SURPRISE_FEATURES}], got "
                             f"{list(surprise_weight.shape)}")
        self.weight, self.bias, self.surprise_weight = weight, bias, surprise_weight

    def logits(self, hidden: torch.Tensor, surprise: torch.Tensor) -> torch.Tensor:
        """hidden [P, hidden_size], surprise float32 [P, 2] -> float32 [P, 1]."""
        if surprise.shape != (hidden.shape[0], SURPRISE_FEATURES):
            raise ValueError(f"surprise features must be [{hidden.shape[0]}, {SURPRISE_FEATURES}] for "
                             f"{hidden.shape[0]} hidden states, got {list(surprise.shape)}")
        return (F.linear(hidden, self.weight, self.bias).float()
                + F.linear(surprise.to(self.surprise_weight), self.surprise_weight).float())


def load_surprisal_value_head(path: str | Path, prefix: str, model: CausalLM) -> SurprisalValueHead:
    """Read a :class:`SurprisalValueHead` stored under ``prefix``: ``weight``, ``bias`` and ``surprise``."""
    found = read_weights(path, prefix)
    expected = {"weight", "bias", "surprise"}
    if set(found) != expected:
        raise ValueError(f"checkpoint {path} holds {sorted(prefix + n for n in found)} under {prefix!r}: a surprisal "
                         f"value head needs exactly {sorted(prefix + n for n in expected)} (head='value' reads a "
                         "plain value head)")
    width = model.config.hidden_size
    if found["weight"].shape != (1, width):
        raise ValueError(f"head weight {prefix}weight has shape {list(found['weight'].shape)}: expected [1, {width}] "
                         "(the model's hidden size)")
    to_model = dict(device=model.device, dtype=model.dtype)
    return SurprisalValueHead(found["weight"].to(**to_model), found["bias"].to(**to_model),
                              found["surprise"].to(**to_model))


def load_linear_head(path: str | Path, prefix: str, model: CausalLM, *, good_class: int = 1) -> LinearHead:
    """Read a :class:`LinearHead` stored under ``prefix`` (e.g. ``"score."``) in a checkpoint directory.

    Recognised layouts: ``{prefix}weight`` [C, hidden] (+ ``{prefix}bias``), or
    ``{prefix}0.weight`` / ``{prefix}0.bias`` / ``{prefix}2.weight`` / ``{prefix}2.bias``
    (Linear-ReLU-Linear). Weights are moved to the model's device and dtype.
    """
    found = read_weights(path, prefix)
    if not found:
        raise ValueError(f"checkpoint {path} has no weights under {prefix!r}: this head needs a classification or "
                         "value head stored with the model (or choose head='pair' for a tag-token PRM)")
    to_model = dict(device=model.device, dtype=model.dtype)
    if "weight" in found:
        names = [("weight", "bias")]
    elif "0.weight" in found and "2.weight" in found:
        names = [("0.weight", "0.bias"), ("2.weight", "2.bias")]
    else:
        raise ValueError(f"checkpoint {path} holds {sorted(prefix + n for n in found)}: expected {prefix}weight or "
                         f"{prefix}0.weight and {prefix}2.weight")
    unknown = set(found) - {n for pair in names for n in pair}
    if unknown:
        raise ValueError(f"checkpoint {path} holds {sorted(prefix + n for n in unknown)}, which a head under "
                         f"{prefix!r} does not use")
    layers = [(found[w].to(**to_model), found[b].to(**to_model) if b in found else None) for w, b in names]
    width = model.config.hidden_size
    for i, (weight, _) in enumerate(layers):
        expected_in = width if i == 0 else layers[i - 1][0].shape[0]
        if weight.dim() != 2 or weight.shape[1] != expected_in:
            raise ValueError(f"head weight {prefix}{names[i][0]} has shape {list(weight.shape)}: expected "
                             f"[out, {expected_in}] (the model's hidden size is {width})")
    return LinearHead(layers, good_class=good_class)
