"""ponder's random numbers in Triton: Philox4x32-10 with the sampling counters.

The same bits as ``csrc/include/ponder/philox.h`` and ``ponder.reference.philox``:
key = the row's 64-bit seed (low word, high word), counter = ``(column // 4, draw, row, 0)``,
and column ``c`` takes output word ``c % 4``. The rounds are Triton's own ``tl.philox``,
whose key schedule and round constants are the standard Philox4x32-10 ones
(tests/kernels/test_triton_sampling.py checks the bits against the reference).
"""

import triton
import triton.language as tl


@triton.jit
def sampling_bits(seed, row, draw, first_col, BLOCK: tl.constexpr):
    """Random words of columns ``first_col .. first_col + BLOCK - 1`` for N (seed, row, draw) items.

    seed : int64 [N] (the bit pattern is the key; negative values are fine)
    row, draw : int32 [N]
    first_col : int32 scalar, a multiple of 4
    BLOCK : a multiple of 4

    Returns uint32 [N, BLOCK].
    """
    items: tl.constexpr = seed.shape[0]
    groups: tl.constexpr = BLOCK // 4
    shape: tl.constexpr = [items, groups]
    # One Philox call gives the four words of a group of four adjacent columns.
    c0 = tl.broadcast_to((first_col // 4 + tl.arange(0, groups))[None, :], shape)
    c1 = tl.broadcast_to(draw[:, None], shape)
    c2 = tl.broadcast_to(row[:, None], shape)
    w0, w1, w2, w3 = tl.philox(seed[:, None], c0, c1, c2, c1 * 0)
    # Interleave to column order: join(join(w0, w2), join(w1, w3))[n, g, a, b] is word 2a + b
    # of group g, so the row-major reshape puts word j of group g at column 4g + j.
    words = tl.join(tl.join(w0, w2), tl.join(w1, w3))
    return tl.reshape(words, [items, BLOCK])


@triton.jit
def uniform_from_bits(bits):
    """float32 uniforms in [2^-24, 1 - 2^-24] from uint32 ``bits``, as ``philox.h``: never 0 or 1."""
    return ((bits >> 8) | 1).to(tl.float32) * 5.9604644775390625e-08  # 2^-24


# For .ci/triton_aot.py: no kernels here, only device functions, compiled inside the
# kernels of kernels/sampling.py.
def aot_variants() -> dict:
    return {}


DEVICE_FUNCTIONS = (sampling_bits, uniform_from_bits)
