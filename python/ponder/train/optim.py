"""What the trainers share: AdamW, a warm-up then cosine schedule that ends with the run, clipped steps.

The run ends after a number of steps or a wall-clock limit, whichever comes first; the
schedule's progress is the larger of the two fractions, so a run cut by the clock still
ends with a small learning rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = ["Optimisation", "Optimiser"]


@dataclass(frozen=True)
class Optimisation:
    """Batch size, AdamW and schedule settings, the clock limit and the seed of a training run."""

    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01  # on matrices only; norms and biases are not decayed
    warmup_steps: int = 50
    minutes: float = 20.0
    seed: int = 0


class Optimiser:
    """AdamW over ``params`` for ``total_steps`` steps of ``config``'s schedule, clipping gradients at norm 1."""

    def __init__(self, params: Iterable[torch.nn.Parameter], config: Optimisation, total_steps: int):
        self.params = list(params)
        self.config, self.total_steps = config, total_steps
        groups = [{"params": [p for p in self.params if p.dim() >= 2], "weight_decay": config.weight_decay},
                  {"params": [p for p in self.params if p.dim() < 2], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))
        self.start = time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    def out_of_time(self) -> bool:
        """Whether the clock limit has passed (check before each step)."""
        return self.elapsed_s > 60 * self.config.minutes

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a tenth by the end of the run (by steps or by the clock)."""
        config = self.config
        if step < config.warmup_steps:
            return config.lr * (step + 1) / config.warmup_steps
        by_steps = (step - config.warmup_steps) / max(1, self.total_steps - config.warmup_steps)
        progress = min(1.0, max(by_steps, self.elapsed_s / (60 * config.minutes)))
        return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def step(self, step: int, loss: torch.Tensor) -> float:
        """Back-propagate ``loss`` and take optimizer step ``step``; returns its learning rate."""
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        return lr
