"""Triton backend of ``ponder.sample`` and ``ponder.filtered_probs``.

The semantics are those of :mod:`ponder.reference.sampling`; this module computes them
without sorting, in three kernels:

1. ``_filter_kernel`` (one program per row, looping over the vocabulary in chunks)
   finds, per row: the largest cleaned logit and its first index (greedy), the
   log-sum-exp of the raw logits, one integer threshold that applies top-k and top-p
   together, and the total weight of the kept tokens. Both thresholds come from exact
   binary searches over order-preserving int32 keys of float bits:

   * top-k: the largest key ``t`` of ``x`` with ``count(key >= t) >= k``, i.e. the k-th
     largest ``x``. Division rounds monotonically, so the k-th largest ``s = x / T`` is
     that ``x`` divided by ``T``: these passes need no division. Ties are kept.
   * top-p: the smallest key ``t`` of ``s`` (not below the top-k threshold) with
     ``mass(key > t) < p * Z``. The mass above ``t`` only changes at existing values, so
     the smallest such ``t`` is always the key of an existing value, and the kept set is
     the set the reference keeps.

   Each search takes as many passes over the row as its key range has bits (at most
   32, none when no row of the program uses the filter); on a GPU the row stays in L2.
2. ``_probs_kernel`` (one program per row chunk) writes ``w / sum(kept w)``.
3. ``_sample_kernel`` (one program per draw on a GPU) draws by Gumbel-max with ponder's
   Philox uniforms, drawing random numbers only for chunks that can hold the winner.

Where the result can differ from the reference (float rounding only):

* Masses: each lane of a chunk sums its weights in float32 across the chunks, and the
  lanes' sums are added in float64; the reference sums in float64 in sorted order. A
  top-p decision can differ only when the mass above a token is within that float32
  rounding (about 1e-7 relative) of ``top_p * Z``; kept totals, and so
  ``filtered_probs`` and ``logprobs``, differ in the last ulps.
* ``exp`` and ``log`` are ``tl.exp``/``tl.log``: numpy's in the interpreter; on NVIDIA
  GPUs ``tl.exp`` is the hardware ``ex2.approx`` of ``x * log2(e)`` (a few ulps, up to
  about 1e-6 relative for arguments near -80) and ``tl.log`` a float32 polynomial
  (about 1 ulp). So ``w = exp(s - max s)`` can differ in its last bits from torch's,
  which matters only for a ``min_p`` boundary that a weight meets to within that error,
  and for the Gumbel keys ``(s - max s) - log(-log(u))``: two kept tokens whose keys
  agree to within an ulp or two may be ordered differently.
* ``raw_logprobs`` is ``(x - max) - log(sum exp(x - max))``, summed in float32.

Everything else is exact: ``s = x / T`` is an IEEE division (``div_rn``) clamped to the
finite range as the reference clamps it, and the thresholds, ties and first-index rules
match the reference bit for bit.
"""

import os

import torch
import triton
import triton.language as tl

from .philox import sampling_bits, uniform_from_bits

# Columns per chunk and warps per program on a GPU: a [1, 4096] float32 tile is 16
# registers a thread with 8 warps, small enough for the few tiles a pass keeps live.
GPU_BLOCK = 4096
NUM_WARPS = 8
# The interpreter runs every Triton operation as one numpy call at a fixed Python cost
# of about 0.1 ms, so it is fastest with few, large tiles: up to 2^16 elements, with
# several rows (or draws) per program when the vocabulary is small.
_INTERPRETER_TILE = 1 << 16

_FLT_MAX = tl.constexpr(3.4028234663852886e38)
# Order key of -FLT_MAX: the smallest key a finite value has. -inf keys (and masked
# lanes, loaded as -inf) lie below it, so a search never counts them.
_LOWEST_KEY = tl.constexpr(-0x7F7FFFFF)
# The Gumbel noise -log(-log(u)) over ponder's uniforms u in [2^-24, 1 - 2^-24] lies in
# [-2.8115, 16.6355]. The largest token (s - max s = 0) is always kept, so its key is at
# least -2.82, and a token more than 16.64 + 2.82 below the max can never win. -20
# leaves room for the rounding of log; rounding is monotonic, so the cut is exact.
_GUMBEL_REACH = tl.constexpr(-20.0)
_MIN_P_MAX = tl.constexpr(0.99999994)  # the largest float32 below 1
_TOP_P_MIN = tl.constexpr(1.1754944e-38)  # the smallest normal float32


@triton.jit
def _divisor(temperature_ptr, rows, mask):
    """Per-row divisor of the logits (float32 [R]) and greedy flag (bool [R]).

    Temperature <= 0 (or NaN: values on a GPU are unchecked) is greedy, where the
    reference divides by 1.
    """
    temperature = tl.load(temperature_ptr + rows, mask=mask, other=1.0)
    greedy = ~(temperature > 0)
    return tl.where(greedy, 1.0, temperature), greedy


@triton.jit
def _min_p(min_p_ptr, rows, mask):
    """Per-row min-p clamped into [0, 1): float32 [R]."""
    min_p = tl.load(min_p_ptr + rows, mask=mask, other=0.0)
    return tl.where(min_p > 0, tl.minimum(min_p, _MIN_P_MAX), 0.0)


@triton.jit
def _scale(x, divisor):
    """``x / divisor`` (IEEE division) clamped to the finite float32 range; -inf stays -inf."""
    s = tl.minimum(tl.maximum(tl.math.div_rn(x, divisor), -_FLT_MAX), _FLT_MAX)
    return tl.where(x == float("-inf"), float("-inf"), s)


@triton.jit
def _scaled_max(x_max, divisor):
    """The largest scaled logit ``_scale(x_max, divisor)`` where finite, else 0: float32 [R].

    Correctly rounded division and the clamp are monotonic, so this is exactly the
    largest ``s``. It is not finite only on rows with no finite logit, which have no
    distribution; 0 keeps their ``exp(s - s_max)`` free of NaN.
    """
    s_max = _scale(x_max, divisor)
    return tl.where((s_max > float("-inf")) & (s_max < float("inf")), s_max, 0.0)


@triton.jit
def _load_logits(row_ptrs, row_ok, cols, stride_v, vocab):
    """Cleaned logits of columns ``cols`` of the rows at ``row_ptrs`` (shapes broadcast): float32.

    NaN -> -inf, +inf -> FLT_MAX, as the reference cleans them; -inf outside the rows
    (``row_ok``) and the vocabulary.
    """
    ptrs = row_ptrs + cols.to(tl.int64) * stride_v
    x = tl.load(ptrs, mask=row_ok & (cols < vocab), other=float("-inf")).to(tl.float32)
    return tl.where(x == x, tl.minimum(x, _FLT_MAX), float("-inf"))


@triton.jit
def _order_key(s):
    """int32 keys ordered like the float32 values ``s`` (-0.0 and +0.0 both map to 0)."""
    bits = s.to(tl.int32, bitcast=True)
    return tl.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


@triton.jit
def _key_value(key):
    """The float32 whose order key is the int32 ``key`` (the inverse of ``_order_key``)."""
    bits = tl.where(key < 0, (-key) | -0x80000000, key)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _bit_length(span):
    """Bits of the int64 scalar ``span`` (0 if span <= 0): the steps a binary search over it takes.

    Read off the float32 exponent; rounding up to the next power of two only adds a
    harmless step.
    """
    exponent = (span.to(tl.float32).to(tl.int32, bitcast=True) >> 23) - 126
    return tl.where(span > 0, exponent, 0)


@triton.jit
def _filter_kernel(
    logits_ptr, stride_b, stride_v,  # [B, V], any strides
    temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr,  # [B]: float32, int64, float32, float32
    x_max_ptr, log_sum_ptr, argmax_ptr, threshold_ptr, kept_sum_ptr,  # [B] out: f32, f32, i32, i32, f32
    batch, vocab,
    ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    """Per-row statistics of the filtered distribution, ROWS rows per program.

    Outputs: ``x_max`` (largest cleaned logit), ``log_sum`` (log of sum exp(x - x_max)),
    ``argmax`` (its first index), ``threshold`` (kept tokens have
    ``order_key(s) >= threshold`` and ``w >= min_p``), ``kept_sum`` (total kept ``w``;
    1 on greedy rows, 0 on rows with no distribution).
    """
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < batch
    row_ptrs = logits_ptr + rows.to(tl.int64)[:, None] * stride_b
    lanes = tl.arange(0, BLOCK)[None, :]

    divisor, greedy = _divisor(temperature_ptr, rows, row_ok)
    top_k = tl.load(top_k_ptr + rows, mask=row_ok, other=0)
    top_p = tl.load(top_p_ptr + rows, mask=row_ok, other=1.0)
    min_p = _min_p(min_p_ptr, rows, row_ok)

    # Pass 1: the largest cleaned logit and its first index. Each lane keeps its own
    # first maximum; the smallest column among the lanes holding the row maximum is
    # the row's first maximum.
    best = tl.full([ROWS, BLOCK], float("-inf"), tl.float32)
    best_col = tl.zeros([ROWS, BLOCK], tl.int32)
    for start in range(0, vocab, BLOCK):
        cols = start + lanes
        x = _load_logits(row_ptrs, row_ok[:, None], cols, stride_v, vocab)
        better = x > best
        best = tl.where(better, x, best)
        best_col = tl.where(better, cols, best_col)
    x_max = tl.max(best, 1)
    argmax = tl.min(tl.where(best == x_max[:, None], best_col, vocab), 1)
    s_max = _scale(x_max, divisor)
    has_dist = (s_max > float("-inf")) & (s_max < float("inf"))
    s_top = _scaled_max(x_max, divisor)[:, None]
    sampled = has_dist & ~greedy
    use_k = sampled & (top_k > 0) & (top_k < vocab)
    use_p = sampled & (top_p < 1)
    top_p = tl.where(top_p > 0, top_p, _TOP_P_MIN)
    use_min_p = sampled & (min_p > 0)

    # Top-k: the largest key t of x with count(key >= t) >= k, i.e. the k-th largest x.
    # s = x / T rounds monotonically, so the k-th largest s is the k-th largest x over T:
    # these passes need no division. Rows without top-k start converged at the lowest
    # finite key, which also stands when fewer than k logits are finite.
    lo = tl.full([ROWS], _LOWEST_KEY, tl.int64)
    hi = tl.where(use_k, _order_key(x_max).to(tl.int64), lo)
    for _ in range(_bit_length(tl.max(hi - lo))):
        active = lo < hi
        mid = lo + (hi - lo + 1) // 2
        count = tl.zeros([ROWS, BLOCK], tl.int32)
        for start in range(0, vocab, BLOCK):
            x = _load_logits(row_ptrs, row_ok[:, None], start + lanes, stride_v, vocab)
            count += (_order_key(x) >= mid.to(tl.int32)[:, None]).to(tl.int32)
        enough = tl.sum(count, 1) >= top_k
        lo = tl.where(active & enough, mid, lo)
        hi = tl.where(active & ~enough, mid - 1, hi)
    # The same threshold on the key of s (an s of -inf, from a huge negative x over a
    # small T, keeps every finite s, as in the reference).
    kth_found = lo > _LOWEST_KEY
    kth_s = _scale(tl.where(kth_found, _key_value(lo.to(tl.int32)), 0.0), divisor)
    top_k_key = tl.where(kth_found, tl.maximum(_order_key(kth_s), _LOWEST_KEY), _LOWEST_KEY)

    # Pass: the raw softmax normaliser and Z, the weight of the top-k survivors. Totals
    # over the lanes are taken in float64: the top-p decisions compare them.
    x_top = tl.where(x_max > float("-inf"), x_max, 0.0)[:, None]
    raw_acc = tl.zeros([ROWS, BLOCK], tl.float32)
    z_acc = tl.zeros([ROWS, BLOCK], tl.float32)
    for start in range(0, vocab, BLOCK):
        x = _load_logits(row_ptrs, row_ok[:, None], start + lanes, stride_v, vocab)
        s = _scale(x, divisor[:, None])
        raw_acc += tl.exp(x - x_top)
        z_acc += tl.where(_order_key(s) >= top_k_key[:, None], tl.exp(s - s_top), 0.0)
    log_sum = tl.log(tl.where(x_max > float("-inf"), tl.sum(raw_acc, 1), 1.0))
    z = tl.sum(z_acc.to(tl.float64), 1)

    # Top-p: the smallest key t of s, not below the top-k threshold, with
    # mass(key > t) < p * Z. Keys above t are above the top-k threshold too, so the mass
    # is over top-k survivors only.
    p_z = top_p.to(tl.float64) * z
    lo = top_k_key.to(tl.int64)
    hi = tl.where(use_p, _order_key(s_max).to(tl.int64), lo)
    for _ in range(_bit_length(tl.max(hi - lo))):
        active = lo < hi
        mid = lo + (hi - lo) // 2
        above = tl.zeros([ROWS, BLOCK], tl.float32)
        for start in range(0, vocab, BLOCK):
            x = _load_logits(row_ptrs, row_ok[:, None], start + lanes, stride_v, vocab)
            s = _scale(x, divisor[:, None])
            above += tl.where(_order_key(s) > mid.to(tl.int32)[:, None], tl.exp(s - s_top), 0.0)
        inside = tl.sum(above.to(tl.float64), 1) < p_z
        hi = tl.where(active & inside, mid, hi)
        lo = tl.where(active & ~inside, mid + 1, lo)
    threshold = lo.to(tl.int32)

    # Pass: the kept weight after top-p and min-p (without them it is Z).
    kept_sum = z.to(tl.float32)
    if tl.max((use_p | use_min_p).to(tl.int32)) > 0:
        kept_acc = tl.zeros([ROWS, BLOCK], tl.float32)
        for start in range(0, vocab, BLOCK):
            x = _load_logits(row_ptrs, row_ok[:, None], start + lanes, stride_v, vocab)
            s = _scale(x, divisor[:, None])
            w = tl.exp(s - s_top)
            kept = (_order_key(s) >= threshold[:, None]) & (w >= min_p[:, None])
            kept_acc += tl.where(kept, w, 0.0)
        kept_sum = tl.sum(kept_acc.to(tl.float64), 1).to(tl.float32)
    kept_sum = tl.where(greedy, 1.0, kept_sum)
    kept_sum = tl.where(has_dist, kept_sum, 0.0)

    tl.store(x_max_ptr + rows, x_max, mask=row_ok)
    tl.store(log_sum_ptr + rows, log_sum, mask=row_ok)
    tl.store(argmax_ptr + rows, argmax, mask=row_ok)
    tl.store(threshold_ptr + rows, threshold, mask=row_ok)
    tl.store(kept_sum_ptr + rows, kept_sum, mask=row_ok)


@triton.jit
def _probs_kernel(
    logits_ptr, stride_b, stride_v,  # [B, V], any strides
    temperature_ptr, min_p_ptr,  # [B] float32
    x_max_ptr, argmax_ptr, threshold_ptr, kept_sum_ptr,  # [B] from _filter_kernel
    probs_ptr,  # [B, V] float32 out, contiguous
    batch, vocab,
    ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    """``filtered_probs`` for a [ROWS, BLOCK] tile: kept ``w / kept_sum``, else 0."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < batch
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)[None, :]

    divisor, greedy = _divisor(temperature_ptr, rows, row_ok)
    min_p = _min_p(min_p_ptr, rows, row_ok)
    s_top = _scaled_max(tl.load(x_max_ptr + rows, mask=row_ok, other=0.0), divisor)
    argmax = tl.load(argmax_ptr + rows, mask=row_ok, other=0)
    threshold = tl.load(threshold_ptr + rows, mask=row_ok, other=0)
    kept_sum = tl.load(kept_sum_ptr + rows, mask=row_ok, other=0.0)

    x = _load_logits(logits_ptr + rows.to(tl.int64)[:, None] * stride_b, row_ok[:, None], cols, stride_v, vocab)
    s = _scale(x, divisor[:, None])
    w = tl.exp(s - s_top[:, None])
    kept = (_order_key(s) >= threshold[:, None]) & (w >= min_p[:, None])
    kept = tl.where(greedy[:, None], cols == argmax[:, None], kept)
    w = tl.where(greedy[:, None], 1.0, w)
    has_dist = kept_sum > 0
    probs = tl.math.div_rn(w, tl.where(has_dist, kept_sum, 1.0)[:, None])
    probs = tl.where(kept & has_dist[:, None], probs, 0.0)
    tl.store(probs_ptr + rows.to(tl.int64)[:, None] * vocab + cols, probs, mask=row_ok[:, None] & (cols < vocab))


@triton.jit
def _sample_kernel(
    logits_ptr, stride_b, stride_v,  # [B, V], any strides
    temperature_ptr, min_p_ptr, seeds_ptr,  # [B]: float32, float32, int64
    x_max_ptr, log_sum_ptr, argmax_ptr, threshold_ptr, kept_sum_ptr,  # [B] from _filter_kernel
    tokens_ptr, logprobs_ptr, raw_logprobs_ptr,  # [B, S] out: int64, float32, float32, contiguous
    batch, vocab, num_samples,
    DRAWS: tl.constexpr, BLOCK: tl.constexpr,
):
    """DRAWS draws per program; draw ``i`` of the launch is sample ``i % S`` of row ``i // S``.

    Gumbel-max: token = the first index of the largest ``(s - max s) - log(-log(u))`` over
    kept tokens, with each lane keeping its own first maximum across chunks.
    """
    items = tl.program_id(0) * DRAWS + tl.arange(0, DRAWS)
    item_ok = items < batch * num_samples
    rows = items // num_samples
    draws = items - rows * num_samples
    row_ptrs = logits_ptr + rows.to(tl.int64) * stride_b
    lanes = tl.arange(0, BLOCK)[None, :]

    divisor, greedy = _divisor(temperature_ptr, rows, item_ok)
    min_p = _min_p(min_p_ptr, rows, item_ok)
    x_max = tl.load(x_max_ptr + rows, mask=item_ok, other=0.0)
    s_top = _scaled_max(x_max, divisor)
    threshold = tl.load(threshold_ptr + rows, mask=item_ok, other=0)
    kept_sum = tl.load(kept_sum_ptr + rows, mask=item_ok, other=0.0)
    seed = tl.load(seeds_ptr + rows, mask=item_ok, other=0)
    has_dist = kept_sum > 0
    drawing = has_dist & ~greedy

    best_key = tl.full([DRAWS, BLOCK], float("-inf"), tl.float32)
    best_col = tl.zeros([DRAWS, BLOCK], tl.int32)
    if tl.max(drawing.to(tl.int32)) > 0:
        # Random numbers only for chunks holding a kept token within reach of the max.
        # Tokens whose w underflows to 0 (the reference drops them) are out of reach.
        for start in range(0, vocab, BLOCK):
            cols = start + lanes
            x = _load_logits(row_ptrs[:, None], item_ok[:, None], cols, stride_v, vocab)
            s = _scale(x, divisor[:, None])
            rel = s - s_top[:, None]
            kept = drawing[:, None] & (_order_key(s) >= threshold[:, None]) & (tl.exp(rel) >= min_p[:, None])
            if tl.max((kept & (rel >= _GUMBEL_REACH)).to(tl.int32)) > 0:
                u = uniform_from_bits(sampling_bits(seed, rows, draws, start, BLOCK))
                key = tl.where(kept, rel - tl.log(-tl.log(u)), float("-inf"))
                better = key > best_key
                best_key = tl.where(better, key, best_key)
                best_col = tl.where(better, cols, best_col)
    top = tl.max(best_key, 1)
    drawn = tl.min(tl.where(best_key == top[:, None], best_col, vocab), 1)

    token = tl.where(greedy, tl.load(argmax_ptr + rows, mask=item_ok, other=0), drawn)
    token = tl.where(has_dist, token, 0)
    # Rows without a distribution report -inf below; zeros keep their arithmetic NaN-free.
    x = tl.where(has_dist, _load_logits(row_ptrs, item_ok, token, stride_v, vocab), 0.0)
    x_max = tl.where(has_dist, x_max, 0.0)
    w = tl.exp(_scale(x, divisor) - s_top)
    logprob = tl.where(greedy, 0.0, tl.log(w) - tl.log(tl.where(has_dist, kept_sum, 1.0)))
    raw_logprob = (x - x_max) - tl.load(log_sum_ptr + rows, mask=item_ok, other=0.0)
    tl.store(tokens_ptr + items, token.to(tl.int64), mask=item_ok)
    tl.store(logprobs_ptr + items, tl.where(has_dist, logprob, float("-inf")), mask=item_ok)
    tl.store(raw_logprobs_ptr + items, tl.where(has_dist, raw_logprob, float("-inf")), mask=item_ok)


def _tile_shape(items: int, vocab: int) -> tuple[int, int]:
    """(rows or draws per program, columns per chunk) for a launch over ``items`` rows or draws."""
    if os.environ.get("TRITON_INTERPRET", "0") != "1":
        return 1, GPU_BLOCK
    block = min(max(triton.next_power_of_2(vocab), 16), _INTERPRETER_TILE)
    return min(triton.next_power_of_2(items), _INTERPRETER_TILE // block), block


def _dense(*per_row: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-row [B] tensors laid out densely, as the kernels index them.

    They may arrive as views: a seed expanded over the batch has stride 0. Copying B
    numbers is cheap; the [B, V] logits are never copied (the kernels take its strides).
    """
    return tuple(t.contiguous() for t in per_row)


def _row_stats(logits, temperature, top_k, top_p, min_p) -> tuple[torch.Tensor, ...]:
    """Run ``_filter_kernel``: (x_max f32, log_sum f32, argmax i32, threshold i32, kept_sum f32), each [B]."""
    batch, vocab = logits.shape
    stats = tuple(torch.empty(batch, dtype=dtype, device=logits.device)
                  for dtype in (torch.float32, torch.float32, torch.int32, torch.int32, torch.float32))
    rows, block = _tile_shape(batch, vocab)
    # Launch on logits' GPU, which need not be the current one (a no-op on the CPU).
    with torch.cuda.device_of(logits):
        _filter_kernel[(triton.cdiv(batch, rows),)](
            logits, logits.stride(0), logits.stride(1), temperature, top_k, top_p, min_p, *stats, batch, vocab,
            ROWS=rows, BLOCK=block, num_warps=NUM_WARPS)
    return stats


def filtered_probs(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                   min_p: torch.Tensor) -> torch.Tensor:
    """The distribution :func:`sample` draws from: float32 [B, V], rows sum to 1 (or are all 0).

    ``logits`` float32/float16/bfloat16 [B, V], any strides; ``temperature``, ``top_p``,
    ``min_p`` float32 [B]; ``top_k`` int64 [B]; all on one device, already validated
    (out-of-range values, possible on a GPU, are clamped).
    """
    batch, vocab = logits.shape
    probs = torch.empty((batch, vocab), dtype=torch.float32, device=logits.device)
    if batch == 0:
        return probs
    temperature, top_k, top_p, min_p = _dense(temperature, top_k, top_p, min_p)
    x_max, _, argmax, threshold, kept_sum = _row_stats(logits, temperature, top_k, top_p, min_p)
    rows, block = _tile_shape(batch, vocab)
    with torch.cuda.device_of(logits):
        _probs_kernel[(triton.cdiv(batch, rows), triton.cdiv(vocab, block))](
            logits, logits.stride(0), logits.stride(1), temperature, min_p, x_max, argmax, threshold, kept_sum, probs,
            batch, vocab, ROWS=rows, BLOCK=block, num_warps=NUM_WARPS)
    return probs


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
           min_p: torch.Tensor, seeds: torch.Tensor, num_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``num_samples`` tokens per row.

    Arguments as :func:`filtered_probs`, plus ``seeds`` int64 [B] and ``num_samples >= 1``.
    Returns ``(tokens int64 [B, S], logprobs float32 [B, S], raw_logprobs float32 [B, S])``.
    """
    batch, vocab = logits.shape
    shape = (batch, num_samples)
    tokens = torch.empty(shape, dtype=torch.int64, device=logits.device)
    logprobs = torch.empty(shape, dtype=torch.float32, device=logits.device)
    raw_logprobs = torch.empty(shape, dtype=torch.float32, device=logits.device)
    if batch == 0:
        return tokens, logprobs, raw_logprobs
    temperature, top_k, top_p, min_p, seeds = _dense(temperature, top_k, top_p, min_p, seeds)
    x_max, log_sum, argmax, threshold, kept_sum = _row_stats(logits, temperature, top_k, top_p, min_p)
    draws, block = _tile_shape(batch * num_samples, vocab)
    with torch.cuda.device_of(logits):
        _sample_kernel[(triton.cdiv(batch * num_samples, draws),)](
            logits, logits.stride(0), logits.stride(1), temperature, min_p, seeds,
            x_max, log_sum, argmax, threshold, kept_sum, tokens, logprobs, raw_logprobs,
            batch, vocab, num_samples, DRAWS=draws, BLOCK=block, num_warps=NUM_WARPS)
    return tokens, logprobs, raw_logprobs


# Ahead-of-time compilation (.ci/triton_aot.py), outside the interpreter: every kernel in
# the launch configuration a GPU gets, for each logits dtype. Integer arguments are
# compiled as i32 (the JIT specialises them further per call).
_POINTER_TYPES = {
    "temperature_ptr": "*fp32", "top_k_ptr": "*i64", "top_p_ptr": "*fp32", "min_p_ptr": "*fp32", "seeds_ptr": "*i64",
    "x_max_ptr": "*fp32", "log_sum_ptr": "*fp32", "argmax_ptr": "*i32", "threshold_ptr": "*i32",
    "kept_sum_ptr": "*fp32", "probs_ptr": "*fp32", "tokens_ptr": "*i64", "logprobs_ptr": "*fp32",
    "raw_logprobs_ptr": "*fp32",
}


def aot_variants() -> dict:
    """``{kernel: [dict(signature=..., constexprs=..., num_warps=...), ...]}`` for ``triton.compile``."""
    def signature(kernel, logits_type):
        return {param.name: "constexpr" if param.is_constexpr else
                logits_type if param.name == "logits_ptr" else _POINTER_TYPES.get(param.name, "i32")
                for param in kernel.params}

    return {
        kernel: [dict(signature=signature(kernel, logits_type), constexprs={tile: 1, "BLOCK": GPU_BLOCK},
                      num_warps=NUM_WARPS)
                 for logits_type in ("*fp32", "*fp16", "*bf16")]
        for kernel, tile in ((_filter_kernel, "ROWS"), (_probs_kernel, "ROWS"), (_sample_kernel, "DRAWS"))
    }


DEVICE_FUNCTIONS = (_divisor, _min_p, _scale, _scaled_max, _load_logits, _order_key, _key_value, _bit_length)
