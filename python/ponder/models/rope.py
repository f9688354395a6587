"""Rotary position embeddings (RoPE) as the Llama family applies them, with Llama 3 frequency scaling.

Channel ``d`` and ``d + head_dim / 2`` of a head form a pair rotated by angle
``position * inv_freq[d]`` (the "rotate half" layout of transformers). The cos / sin
tables are computed once, in float32 exactly as transformers computes them, and cast
to the model dtype; :meth:`RotaryEmbedding.ensure` grows them when longer sequences
come.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ponder.models.config import Llama3RopeScaling

__all__ = ["inverse_frequencies", "RotaryEmbedding", "apply_rotary"]


def inverse_frequencies(head_dim: int, theta: float, scaling: Llama3RopeScaling | None = None) -> torch.Tensor:
    """Rotation speed of each channel pair: float32 [head_dim // 2].

    ``theta ** (-2i / head_dim)``, then, with Llama 3 scaling, low frequencies divided
    by ``factor`` and the band between the two wavelength thresholds interpolated (the
    formula of transformers' ``_compute_llama3_parameters``).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim))
    if scaling is None:
        return inv_freq
    old_context = scaling.original_max_position_embeddings
    low_freq_wavelen = old_context / scaling.low_freq_factor
    high_freq_wavelen = old_context / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_context / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """cos / sin tables of every position below ``length``: [length, head_dim // 2] each.

    The tables are non-persistent buffers (they follow ``.to()``, are not saved) of the
    model dtype; they start empty and grow with :meth:`ensure`.
    """

    def __init__(self, head_dim: int, theta: float, scaling: Llama3RopeScaling | None = None, *,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.head_dim = head_dim
        self.inv_freq = inverse_frequencies(head_dim, theta, scaling)  # float32 on the CPU, never cast
        self.register_buffer("cos", torch.empty(0, head_dim // 2, device=device, dtype=dtype), persistent=False)
        self.register_buffer("sin", torch.empty(0, head_dim // 2, device=device, dtype=dtype), persistent=False)

    @property
    def length(self) -> int:
        """Positions the tables cover."""
        return self.cos.shape[0]

    def ensure(self, length: int) -> None:
        """Make the tables cover positions ``[0, length)``; grow at least twofold when they must grow."""
        if length <= self.length:
            return
        length = max(length, 2 * self.length)
        # Built outside inference mode so the tables also serve autograd (forward_dense).
        with torch.inference_mode(False), torch.no_grad():
            freqs = torch.arange(length, dtype=torch.int64, device="cpu").float()[:, None] * self.inv_freq[None, :]
            self.cos = freqs.cos().to(device=self.cos.device, dtype=self.cos.dtype)
            self.sin = freqs.sin().to(device=self.sin.device, dtype=self.sin.dtype)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin at ``positions`` (int64 [...], each below :attr:`length`): [..., head_dim // 2] each."""
        return self.cos[positions], self.sin[positions]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the channel pairs ``(d, d + head_dim / 2)`` of every head.

    Parameters
    ----------
    x : [..., heads, head_dim], any strides
    cos, sin : [..., head_dim // 2] (the leading dims of ``x`` without ``heads``), x's dtype

    Returns
    -------
    A new [..., heads, head_dim] tensor: ``x * cos + rotate_half(x) * sin``.
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
