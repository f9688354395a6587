"""Philox4x32-10 in plain PyTorch: the specification of ponder's random numbers.

Every backend draws its random numbers from the same counters (see
``csrc/include/ponder/philox.h``): key = the row's 64-bit seed, counter =
``(column // 4, draw, row, 0)``, and the column's word is output ``column % 4``.
This module computes exactly those bits with int64 tensor arithmetic (uint32 values
held in int64; 32x32-bit products are split in 16-bit halves so nothing overflows).
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_MUL_A, _MUL_B = 0xD2511F53, 0xCD9E8D57
_WEYL_A, _WEYL_B = 0x9E3779B9, 0xBB67AE85


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of the 64-bit product ``a * b`` (b holds uint32s)."""
    p_lo = (a & 0xFFFF) * b  # < 2^48
    p_hi = (a >> 16) * b  # < 2^48
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & _MASK32
    hi = ((p_hi + (p_lo >> 16)) >> 16) & _MASK32
    return hi, lo


def philox4x32_10(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor,
    k0: torch.Tensor, k1: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on broadcastable int64 tensors holding uint32 values.

    Returns the four output words, each an int64 tensor of the broadcast shape with
    values in [0, 2^32).
    """
    shape = torch.broadcast_shapes(c0.shape, c1.shape, c2.shape, c3.shape, k0.shape, k1.shape)
    c0, c1, c2, c3, k0, k1 = (t.to(torch.int64).expand(shape) for t in (c0, c1, c2, c3, k0, k1))
    for _ in range(10):
        hi_a, lo_a = _mulhilo(_MUL_A, c0)
        hi_b, lo_b = _mulhilo(_MUL_B, c2)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _WEYL_A) & _MASK32
        k1 = (k1 + _WEYL_B) & _MASK32
    return c0, c1, c2, c3


def uniform_from_bits(bits: torch.Tensor) -> torch.Tensor:
    """float32 uniforms in [2^-24, 1 - 2^-24]: odd multiples of 2^-24, never 0 or 1."""
    return ((bits >> 8) | 1).to(torch.float32) * 2.0**-24


def sampling_uniforms(seeds: torch.Tensor, vocab: int, draw: int | range) -> torch.Tensor:
    """The uniforms a sampling op uses for one draw of every row, or for a range of draws.

    Parameters
    ----------
    seeds : int64 [B]
        Per-row 64-bit seeds (the bit pattern is used; negative values are fine).
    vocab : int
        Number of columns V.
    draw : int or range
        Draw index (0 .. num_samples - 1), or a range of them.

    Returns
    -------
    float32 [B, V] for one draw; float32 [D, B, V] for a range of D draws
    """
    batch = seeds.shape[0]
    device = seeds.device
    groups = (vocab + 3) // 4
    c0 = torch.arange(groups, device=device, dtype=torch.int64).view(1, groups)
    row = torch.arange(batch, device=device, dtype=torch.int64).view(batch, 1)
    k0 = (seeds & _MASK32).view(batch, 1)
    k1 = ((seeds >> 32) & _MASK32).view(batch, 1)
    zero = torch.zeros((), dtype=torch.int64, device=device)
    if isinstance(draw, range):  # one counter word per draw, broadcast over [B, groups]
        c1 = torch.arange(draw.start, draw.stop, draw.step, device=device, dtype=torch.int64).view(-1, 1, 1)
    else:
        c1 = zero + draw
    words = philox4x32_10(c0, c1, row, zero, k0, k1)
    bits = torch.stack(words, dim=-1)
    bits = bits.reshape(*bits.shape[:-2], groups * 4)[..., :vocab]
    return uniform_from_bits(bits)
