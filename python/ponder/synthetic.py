"""Synthetic inputs shaped like a language model's, for the demo and the tests."""

from __future__ import annotations

import torch


def llm_like_logits(batch: int, vocab: int, seed: int, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits with a broad tail (normal, std 2) plus eight strong candidates per row (+6 to +10).

    Returns ``dtype`` [batch, vocab] on ``device``, the same numbers for a seed on every
    device (drawn on the CPU, then rounded to ``dtype`` and moved).
    """
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=g) * 2.0
    strong = torch.randint(0, vocab, (batch, 8), generator=g)
    logits.scatter_(1, strong, 6.0 + 4.0 * torch.rand(batch, 8, generator=g))
    return logits.to(dtype).to(device)
