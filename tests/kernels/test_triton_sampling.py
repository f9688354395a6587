"""Triton-specific checks of kernels/sampling.py and kernels/philox.py.

tests/ops/test_sampling.py runs the triton backend against the reference through the
public API; this file checks what only the Triton code has: its Philox bits, its float
key helpers, its handling of strides, the launch tilings (a GPU's one-row tiles and
multi-chunk loops, which the interpreter's large tiles do not reach) and the clamping of
unchecked per-row values. Without a GPU they run in Triton's interpreter (tests/conftest.py
sets TRITON_INTERPRET=1).
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from ponder.kernels import philox, sampling  # noqa: E402
from ponder.reference import philox as reference_philox  # noqa: E402
from ponder.reference import sampling as reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _bits_kernel(seed_ptr, row_ptr, draw_ptr, out_ptr, first_col, N: tl.constexpr, BLOCK: tl.constexpr):
    items = tl.arange(0, N)
    bits = philox.sampling_bits(tl.load(seed_ptr + items), tl.load(row_ptr + items), tl.load(draw_ptr + items),
                                first_col, BLOCK)
    offsets = items[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :]
    tl.store(out_ptr + offsets, bits.to(tl.int32, bitcast=True))
    tl.store(out_ptr + N * BLOCK + offsets, philox.uniform_from_bits(bits).to(tl.int32, bitcast=True))


SEEDS = [0, 1, 2**32 - 1, 2**32, 2**40 + 7, 2**63 - 1, -1, -(2**63), -123456789012345]


@pytest.mark.parametrize("first_col,block", [(0, 16), (40, 8), (4096, 64)])
def test_philox_bits_match_reference(first_col, block):
    n = len(SEEDS) - 1  # a power of two, as tl.arange needs
    seeds = torch.tensor(SEEDS[:n], dtype=torch.int64)
    rows = torch.tensor([0, 1, 7, 3, 100_000, 2, 65_535, 9], dtype=torch.int32)
    draws = torch.tensor([0, 0, 5, 1, 2, 2**20, 3, 4095], dtype=torch.int32)
    out = torch.empty(2 * n, block, dtype=torch.int32, device=DEVICE)
    _bits_kernel[(1,)](seeds.to(DEVICE), rows.to(DEVICE), draws.to(DEVICE), out, first_col, N=n, BLOCK=block)
    bits, uniforms = out.cpu()[:n].long() & 0xFFFFFFFF, out.cpu()[n:].view(torch.float32)

    cols = torch.arange(first_col, first_col + block)
    words = reference_philox.philox4x32_10(
        (cols // 4).view(1, -1), draws.long().view(-1, 1), rows.long().view(-1, 1), torch.zeros((), dtype=torch.int64),
        (seeds & 0xFFFFFFFF).view(-1, 1), ((seeds >> 32) & 0xFFFFFFFF).view(-1, 1))
    want = torch.stack(words, -1).gather(-1, (cols % 4).view(1, -1, 1).expand(n, block, 1)).squeeze(-1)
    assert torch.equal(bits, want)
    assert torch.equal(uniforms, reference_philox.uniform_from_bits(want))


def test_uniforms_match_reference_sampling_uniforms():
    """The sampling counters, end to end: the uniforms of every column of a few rows and draws."""
    seeds = torch.tensor(SEEDS[-4:], dtype=torch.int64)  # includes -1, -2^63 and 2^63 - 1
    vocab = 52
    for draw in (0, 3):
        want = reference_philox.sampling_uniforms(seeds, vocab, draw)
        out = torch.empty(8, 64, dtype=torch.int32, device=DEVICE)
        rows = torch.arange(4, dtype=torch.int32)
        _bits_kernel[(1,)](seeds.to(DEVICE), rows.to(DEVICE), torch.full((4,), draw, dtype=torch.int32, device=DEVICE),
                           out, 0, N=4, BLOCK=64)
        assert torch.equal(out.cpu()[4:, :vocab].view(torch.float32), want)


@triton.jit
def _key_kernel(x_ptr, key_ptr, back_ptr, N: tl.constexpr):
    offsets = tl.arange(0, N)
    key = sampling._order_key(tl.load(x_ptr + offsets))
    tl.store(key_ptr + offsets, key)
    tl.store(back_ptr + offsets, sampling._key_value(key))


def test_order_key_orders_floats_and_inverts():
    specials = torch.tensor([float("-inf"), -3.4028234663852886e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 1.0,
                             3.4028234663852886e38, float("inf")])
    x = torch.cat([specials, torch.randn(502) * 10.0 ** torch.randint(-30, 30, (502,))])
    keys = torch.empty(512, dtype=torch.int32, device=DEVICE)
    back = torch.empty(512, dtype=torch.float32, device=DEVICE)
    _key_kernel[(1,)](x.to(DEVICE), keys, back, N=512)
    keys, back = keys.cpu().long(), back.cpu()
    order = torch.argsort(x)
    assert (keys[order].diff() >= 0).all()
    assert torch.equal(keys[:, None] == keys[None, :], x[:, None] == x[None, :])  # -0.0 and +0.0 share a key
    assert torch.equal(back, torch.where(x == 0, 0.0, x)) and not torch.signbit(back[x == 0]).any()
    assert keys[0] < sampling._LOWEST_KEY.value == keys[1]  # -inf lies below every finite key


def llm_like(batch: int, vocab: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    """float32 [batch, vocab]: a Gaussian tail, a few strong candidates, some exact ties."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, vocab, generator=g) * scale
    x.scatter_(1, torch.randint(0, vocab, (batch, 6), generator=g), 8.0)  # ties at the top
    x[:, ::7] = torch.round(x[:, ::7])  # ties elsewhere
    return x


def mixed_params(batch: int, vocab: int) -> tuple[torch.Tensor, ...]:
    """(temperature, top_k, top_p, min_p) cycling through every filter combination, greedy included."""
    rows = [(1.0, 0, 1.0, 0.0), (0.7, 50, 0.95, 0.0), (0.0, 0, 1.0, 0.0), (1.3, 10, 0.5, 0.1),
            (1.0, 0, 0.9, 0.0), (0.5, vocab + 7, 1.0, 0.05), (2.0, 3, 1.0, 0.0), (1.0, 0, 0.8, 0.2)]
    t, k, p, m = zip(*(rows[i % len(rows)] for i in range(batch)))
    return (torch.tensor(t), torch.tensor(k, dtype=torch.int64), torch.tensor(p), torch.tensor(m))


def run_triton(logits, params, seeds, num_samples):
    dev = [p.to(DEVICE) for p in params]
    probs = sampling.filtered_probs(logits.to(DEVICE), *dev).cpu()
    drawn = sampling.sample(logits.to(DEVICE), *dev, seeds.to(DEVICE), num_samples)
    return probs, tuple(t.cpu() for t in drawn)


def assert_matches_reference(logits, params, seeds, num_samples):
    probs, (tokens, logprobs, raw) = run_triton(logits, params, seeds, num_samples)
    want_probs = reference.filtered_probs(logits, *params)
    want_tokens, want_logprobs, want_raw = reference.sample(logits, *params, seeds, num_samples)
    assert torch.equal(probs > 0, want_probs > 0)
    torch.testing.assert_close(probs, want_probs, rtol=2e-5, atol=1e-7)
    assert torch.equal(tokens, want_tokens)
    torch.testing.assert_close(logprobs, want_logprobs, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(raw, want_raw, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("tile", [(1, sampling.GPU_BLOCK), (4, 32)], ids=["gpu", "4x32"])
def test_launch_tilings_match_reference(monkeypatch, tile):
    """One row per program (as on a GPU), and several rows per program over many chunks.

    Small chunks put ties and the first maximum in different chunks and lanes, and leave
    whole chunks out of the Gumbel draw's reach.
    """
    monkeypatch.setattr(sampling, "_tile_shape", lambda items, vocab: tile)
    batch, vocab = 6, 200
    logits = llm_like(batch, vocab, seed=1, scale=6.0)
    logits[3, 150] = logits[3].max()  # the first maximum of row 3 sits in a late chunk too
    seeds = torch.arange(batch, dtype=torch.int64) * 2**40 - 3
    assert_matches_reference(logits, mixed_params(batch, vocab), seeds, num_samples=3)


def test_strided_logits_need_no_copy():
    base = llm_like(8, 2 * 100, seed=2)
    params = mixed_params(5, 100)
    seeds = torch.tensor([1, -2, 3, 2**50, -(2**63)], dtype=torch.int64)
    views = {
        "transposed": base[:5, :100].t().contiguous().t(),
        "column_stride_2": base[:5, ::2],
        "row_and_column_slice": base[2:7, 50:150],
        "expanded_row": base[:1, :100].expand(5, 100),
    }
    for name, view in views.items():
        assert not view.is_contiguous(), name
        got = run_triton(view, params, seeds, 2)
        want = run_triton(view.contiguous(), params, seeds, 2)
        assert torch.equal(got[0], want[0]), name
        for a, b in zip(got[1], want[1]):
            assert torch.equal(a, b), name


def test_per_row_parameter_views():
    """Per-row tensors may be views too, e.g. one seed expanded over the batch (stride 0)."""
    logits = llm_like(4, 97, seed=3)
    t, k, p, m = mixed_params(8, 97)
    params = (t[::2], k[::2], p[::2], m[::2])
    seeds = torch.tensor([42], dtype=torch.int64).expand(4)
    assert_matches_reference(logits, params, seeds, num_samples=2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_logits(dtype):
    logits = llm_like(8, 200, seed=4).to(dtype)
    assert_matches_reference(logits, mixed_params(8, 200), torch.arange(8, dtype=torch.int64), num_samples=2)


@pytest.mark.filterwarnings("ignore:overflow encountered in divide:RuntimeWarning")  # x / T overflows: the point
def test_special_values_and_signed_zeros():
    logits = llm_like(6, 64, seed=5)
    logits[0, ::3] = float("nan")
    logits[1] = float("-inf")
    logits[2, [3, 40]] = float("inf")
    logits[3, :32] = 0.0
    logits[3, ::2] = -0.0  # -0.0 and +0.0 tie
    logits[4, 5] = float("inf")  # T < 1 overflows s to +inf: no distribution, as in the reference
    logits[5, :] = -3.4028234663852886e38  # all float32 min: scaled by T < 1 they are -inf
    t = torch.tensor([1.0, 1.0, 1.0, 0.9, 0.5, 0.5])
    params = (t, torch.tensor([0, 3, 0, 20, 0, 2]), torch.tensor([0.9, 1.0, 1.0, 0.5, 1.0, 0.5]),
              torch.tensor([0.0, 0.1, 0.0, 0.0, 0.0, 0.0]))
    assert_matches_reference(logits, params, torch.arange(6, dtype=torch.int64), num_samples=4)


def test_unchecked_values_are_clamped():
    """Per-row values arriving unchecked (as on a GPU) behave like the nearest valid value."""
    logits = llm_like(6, 80, seed=6)
    given = (torch.tensor([-1.0, 1.0, 1.0, 1.0, 1.0, float("nan")]), torch.tensor([0, -5, 0, 0, 0, 0]),
             torch.tensor([1.0, 1.0, 0.0, 2.0, 1.0, 1.0]), torch.tensor([0.0, 0.0, 0.0, 0.0, 1.5, -0.5]))
    clamped = (torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0]), torch.tensor([0, 0, 0, 0, 0, 0]),
               torch.tensor([1.1754944e-38, 1.0, 1.1754944e-38, 1.0, 1.0, 1.0]),
               torch.tensor([0.0, 0.0, 0.0, 0.0, 0.99999994, 0.0]))
    seeds = torch.arange(6, dtype=torch.int64)
    probs, drawn = run_triton(logits, given, seeds, 3)
    assert torch.equal(probs, run_triton(logits, clamped, seeds, 3)[0])
    assert_matches_reference(logits, clamped, seeds, num_samples=3)
    assert torch.equal(drawn[0], reference.sample(logits, *clamped, seeds, 3)[0])


def test_empty_batch():
    logits = torch.empty(0, 10, device=DEVICE)
    none = torch.empty(0, device=DEVICE)
    params = (none, none.long(), none, none)
    assert sampling.filtered_probs(logits, *params).shape == (0, 10)
    assert [t.shape for t in sampling.sample(logits, *params, none.long(), 3)] == [(0, 3)] * 3
