"""Reference of the dense layer: ``y = x @ weight.T + bias`` (what ``torch.nn.functional.linear`` computes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x: float32 [M, K], weight: float32 [N, K], bias: float32 [N] or None -> float32 [M, N]."""
    return F.linear(x, weight, bias)
