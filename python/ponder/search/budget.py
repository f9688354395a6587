"""What a search spent, in the same units for every method, and where its wall time went.

Counters:

* ``generated_tokens``: tokens the policy sampled (roll-outs included);
* ``policy_forward_tokens``: tokens the policy model ran over (prompts once, then every
  sampled token; a cached prompt prefix is not counted);
* ``prm_tokens``: tokens the reward model ran over;
* ``generations``: sampled answers as the compute-optimal scaling paper counts them
  (best-of-N and beam search: N; lookahead with k steps: N * (k + 1)); each method sets it.

Wall time is split into phases, each also a named ``torch.profiler`` range
(``ponder.sampling``, ``ponder.model``, ``ponder.prm``); ``other`` is the rest of the
search's wall time.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch

__all__ = ["Spend", "PHASES"]

PHASES = ("sampling", "model", "prm")


@dataclass
class Spend:
    """Counters and phase timers of one search."""

    generated_tokens: int = 0
    policy_forward_tokens: int = 0
    prm_tokens: int = 0
    generations: int = 0
    wall_s: float = 0.0
    phase_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body as phase ``name`` and mark it as a profiler range ``ponder.<name>``."""
        start = time.perf_counter()
        with torch.profiler.record_function(f"ponder.{name}"):
            yield
        self.phase_s[name] += time.perf_counter() - start

    @contextlib.contextmanager
    def wall(self) -> Iterator[None]:
        """Time the whole search."""
        start = time.perf_counter()
        yield
        self.wall_s += time.perf_counter() - start

    @property
    def other_s(self) -> float:
        """Wall time outside the named phases."""
        return max(0.0, self.wall_s - sum(self.phase_s.values()))

    def to_dict(self) -> dict:
        return {**asdict(self), "other_s": self.other_s}
