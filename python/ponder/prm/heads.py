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
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from ponder.models import CausalLM
from ponder.models.loader import read_weights

__all__ = ["ScoreHead", "TagPairHead", "LinearHead", "load_linear_head"]


class ScoreHead(Protocol):
    """``logits(hidden)`` and the arguments of :func:`ponder.ops.step_scores` that read them.

    Attributes
    ----------
    kind : ``"pair"`` (softmax over columns ``good`` and ``bad``) or ``"sigmoid"`` (of column ``good``)
    good, bad : column indices into the head logits
    """

    kind: str
    good: int
    bad: int

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
