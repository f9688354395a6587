"""Argument checks shared by the public ops: errors that say what was wrong and what was expected."""

from __future__ import annotations

import torch


def check_tensor(name: str, value) -> None:
    """Raise TypeError unless ``value`` is a tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def first_bad(name: str, values: torch.Tensor, bad: torch.Tensor, expected: str) -> None:
    """Raise ValueError naming the first entry of ``values`` where ``bad`` holds."""
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        where = ", ".join(map(str, index))
        raise ValueError(f"{name}[{where}] = {values[index].item()} is out of range: expected {expected}")
