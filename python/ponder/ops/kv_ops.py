"""Ops on the paged KV cache: ``copy_blocks``, ``write_kv`` and ``paged_attention``.

The layout and the semantics are defined in :mod:`ponder.reference.kv_ops`; this module
validates arguments (nothing is modified when a check fails) and runs the chosen backend.
A model step is: ``copy_blocks`` (copy-on-write of shared blocks), ``write_kv`` of the
new tokens in every layer, ``paged_attention``.

Values of index tensors (block ids, slots, lengths) are checked only for CPU tensors
outside ``torch.compile``: reading a GPU tensor would synchronise with the device. On a
GPU, kernels skip out-of-range block ids and slots instead of touching memory outside
the caches.
"""

from __future__ import annotations

import math
import numbers

import torch

from ponder.ops._backend import has_cpu_kernels, resolve_backend, values_checkable
from ponder.ops._checks import check_tensor, first_bad
from ponder.reference import kv_ops as reference

_CACHE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_same_dtype_and_device(name: str, value: torch.Tensor, k_cache: torch.Tensor) -> None:
    if value.dtype != k_cache.dtype:
        raise TypeError(f"{name} is {value.dtype} but k_cache is {k_cache.dtype}")
    if value.device != k_cache.device:
        raise ValueError(f"{name} is on {value.device} but k_cache is on {k_cache.device}")


def _check_caches(k_cache, v_cache) -> None:
    """Both caches: [num_layers, num_blocks, block_size, num_kv_heads, head_dim], one float dtype and device."""
    for name, cache in (("k_cache", k_cache), ("v_cache", v_cache)):
        check_tensor(name, cache)
        if cache.dim() != 5:
            raise ValueError(f"{name} must be 5-D [num_layers, num_blocks, block_size, num_kv_heads, head_dim], "
                             f"got shape {tuple(cache.shape)}")
        if cache.dtype not in _CACHE_DTYPES:
            raise TypeError(f"{name} must be float32, float16 or bfloat16, got {cache.dtype}")
        if not cache.is_contiguous():
            raise ValueError(f"{name} must be contiguous (it is written in place by flat slot), got strides "
                             f"{cache.stride()}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache has shape {tuple(v_cache.shape)} but k_cache has {tuple(k_cache.shape)}")
    _check_same_dtype_and_device("v_cache", v_cache, k_cache)


def _check_index(name: str, value, k_cache: torch.Tensor, *, dims: int, dtypes=(torch.int64,)) -> None:
    check_tensor(name, value)
    if value.dtype not in dtypes:
        raise TypeError(f"{name} must be {' or '.join(str(d) for d in dtypes)}, got {value.dtype}")
    if value.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got shape {tuple(value.shape)}")
    if value.device != k_cache.device:
        raise ValueError(f"{name} is on {value.device} but k_cache is on {k_cache.device}")


def _first_repeat(name: str, values: torch.Tensor) -> None:
    """Raise ValueError naming the first value that occurs twice in the 1-D ``values``."""
    unique, counts = torch.unique(values, return_counts=True)
    if bool((counts > 1).any()):
        raise ValueError(f"{name} holds {int(unique[counts > 1][0])} more than once: expected distinct values")


def _check_layer(layer, k_cache: torch.Tensor) -> int:
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise TypeError(f"layer must be an int, got {layer!r}")
    if not 0 <= layer < k_cache.shape[0]:
        raise ValueError(f"layer = {layer} is out of range: expected 0 <= layer < {k_cache.shape[0]} (num_layers)")
    return int(layer)


# The Triton implementations as custom ops (so torch.compile sees one opaque call).
# Triton itself is imported on first use only: it is an optional dependency and slow to import.
@torch.library.custom_op("ponder::copy_blocks_triton", mutates_args=("k_cache", "v_cache"))
def _copy_blocks_triton(k_cache: torch.Tensor, v_cache: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    from ponder.kernels import kv_ops as kernels

    kernels.copy_blocks(k_cache, v_cache, src, dst)


@torch.library.custom_op("ponder::write_kv_triton", mutates_args=("k_cache", "v_cache"))
def _write_kv_triton(k_cache: torch.Tensor, v_cache: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor,
                     slot_mapping: torch.Tensor) -> None:
    from ponder.kernels import kv_ops as kernels

    kernels.write_kv(k_cache, v_cache, layer, k, v, slot_mapping)


@torch.library.custom_op("ponder::paged_attention_triton", mutates_args=("out",))
def _paged_attention_triton(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, layer: int,
                            block_tables: torch.Tensor, seq_lens: torch.Tensor, query_lens: torch.Tensor,
                            scale: float, out: torch.Tensor) -> None:
    from ponder.kernels import kv_ops as kernels

    kernels.paged_attention(q, k_cache, v_cache, layer, block_tables, seq_lens, query_lens, scale, out)


def _fake_in_place(*args) -> None:
    """Fake of an op that only writes into its arguments: there is nothing to allocate."""


def _reference_attention_into(*args) -> None:
    *inputs, out = args
    out.copy_(reference.paged_attention(*inputs))


# Each op's implementations, all writing into their arguments (same argument lists).
_TRITON = {"copy_blocks": _copy_blocks_triton, "write_kv": _write_kv_triton,
           "paged_attention": _paged_attention_triton}
_REFERENCE = {"copy_blocks": reference.copy_blocks, "write_kv": reference.write_kv,
              "paged_attention": _reference_attention_into}

for _op in _TRITON.values():
    _op.register_fake(_fake_in_place)

if has_cpu_kernels():  # the compiled ops' schemas exist only when the extension is built
    for _name in _TRITON:
        torch.library.register_fake(f"ponder::{_name}")(_fake_in_place)


def _run(name: str, backend: str | None, device: torch.device, *args) -> None:
    """Run op ``name`` on ``backend`` (or the best for ``device``)."""
    chosen = resolve_backend(backend, device)
    if chosen == "reference":
        _REFERENCE[name](*args)
    elif chosen == "triton":
        _TRITON[name](*args)
    else:
        getattr(torch.ops.ponder, name)(*args)


def copy_blocks(k_cache: torch.Tensor, v_cache: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, *,
                backend: str | None = None) -> None:
    """Copy block ``src[i]`` to block ``dst[i]`` in every layer of both caches, in place.

    All copy-on-write copies of a model step in one call. The pairs are independent: no
    block is written twice, and no block is both read and written.

    Parameters
    ----------
    k_cache, v_cache : float32 / float16 / bfloat16 [num_layers, num_blocks, block_size, num_kv_heads, head_dim],
        contiguous, same shape, dtype and device
    src, dst : int64 [N] on the caches' device, block ids in ``[0, num_blocks)``;
        ``dst`` distinct, and disjoint from ``src``
    backend : {"reference", "cpu", "cuda", "triton"}, optional

    Raises
    ------
    TypeError, ValueError
        On any bad argument, before anything is modified.
    """
    _check_caches(k_cache, v_cache)
    _check_index("src", src, k_cache, dims=1)
    _check_index("dst", dst, k_cache, dims=1)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same length, got {src.shape[0]} and {dst.shape[0]}")
    num_blocks = k_cache.shape[1]
    if values_checkable(src):
        expected = f"0 <= block < {num_blocks} (num_blocks)"
        first_bad("src", src, (src < 0) | (src >= num_blocks), expected)
        first_bad("dst", dst, (dst < 0) | (dst >= num_blocks), expected)
        _first_repeat("dst", dst)
        both = torch.isin(dst, src)
        if bool(both.any()):
            raise ValueError(f"block {int(dst[both][0])} is both a src and a dst: a copy's source must not be "
                             "overwritten by another copy of the same call")
    _run("copy_blocks", backend, k_cache.device, k_cache, v_cache, src, dst)


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor,
             slot_mapping: torch.Tensor, *, check_indices: bool = True, backend: str | None = None) -> None:
    """Write new tokens' keys and values into their slots of one layer, in place.

    A bad argument raises TypeError or ValueError before anything is written.

    Parameters
    ----------
    k_cache, v_cache : [num_layers, num_blocks, block_size, num_kv_heads, head_dim], as in :func:`copy_blocks`
    layer : int in ``[0, num_layers)``
    k, v : [T, num_kv_heads, head_dim] of the caches' dtype and device, any strides
    slot_mapping : int64 [T]: flat slot ``block * block_size + offset`` of each token, distinct,
        or -1 to skip the token (padding)
    check_indices : False skips the Python checks of ``slot_mapping``'s values (range,
        distinct), for a caller that has checked them once for all layers of a step;
        shapes, dtypes and devices are always checked, and the compiled CPU kernel still
        checks the values itself
    backend : {"reference", "cpu", "cuda", "triton"}, optional
    """
    _check_caches(k_cache, v_cache)
    layer = _check_layer(layer, k_cache)
    _check_index("slot_mapping", slot_mapping, k_cache, dims=1)
    num_tokens = slot_mapping.shape[0]
    expected_shape = (num_tokens, *k_cache.shape[3:])
    for name, new in (("k", k), ("v", v)):
        check_tensor(name, new)
        if new.shape != expected_shape:
            raise ValueError(f"{name} must have shape {list(expected_shape)} ([T, num_kv_heads, head_dim] with T = "
                             f"len(slot_mapping)), got {tuple(new.shape)}")
        _check_same_dtype_and_device(name, new, k_cache)
    if check_indices and values_checkable(slot_mapping):
        num_slots = k_cache.shape[1] * k_cache.shape[2]
        first_bad("slot_mapping", slot_mapping, (slot_mapping < -1) | (slot_mapping >= num_slots),
                   f"-1 (skip) or 0 <= slot < {num_slots} (num_blocks * block_size)")
        _first_repeat("slot_mapping", slot_mapping[slot_mapping >= 0])
    _run("write_kv", backend, k_cache.device, k_cache, v_cache, layer, k, v, slot_mapping)


def _check_attention_values(k_cache, block_tables, seq_lens, query_lens, num_tokens: int) -> None:
    block_size = k_cache.shape[2]
    capacity = block_tables.shape[1] * block_size
    first_bad("query_lens", query_lens, query_lens < 0, ">= 0")
    if int(query_lens.sum()) != num_tokens:
        raise ValueError(f"query_lens sums to {int(query_lens.sum())} but q has {num_tokens} tokens: "
                         "expected sum(query_lens) == q.shape[0]")
    first_bad("seq_lens", seq_lens, (seq_lens < query_lens) | (seq_lens > capacity),
               f"query_lens[s] <= seq_lens[s] <= {capacity} (max_blocks * block_size)")
    used = torch.arange(block_tables.shape[1]) < ((seq_lens + block_size - 1) // block_size)[:, None]
    num_blocks = k_cache.shape[1]
    first_bad("block_tables", block_tables, used & ((block_tables < 0) | (block_tables >= num_blocks)),
               f"0 <= block < {num_blocks} (num_blocks) for the blocks within seq_lens")


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, layer: int,
                    block_tables: torch.Tensor, seq_lens: torch.Tensor, query_lens: torch.Tensor, *,
                    scale: float | None = None, out: torch.Tensor | None = None, check_indices: bool = True,
                    backend: str | None = None) -> torch.Tensor:
    """Causal attention of new query tokens over K/V read through block tables (decode and extend).

    Sequence ``s`` owns ``query_lens[s]`` consecutive rows of ``q``; its query ``i`` sits
    at position ``seq_lens[s] - query_lens[s] + i`` and attends to every cached position
    up to its own. Decode is ``query_lens == 1`` everywhere; extend (or prefill) has
    several new tokens per sequence. The new tokens' K/V must already be in the cache
    (:func:`write_kv`). The exact definition is :mod:`ponder.reference.kv_ops`.

    Parameters
    ----------
    q : [T_total, num_q_heads, head_dim] of the caches' dtype, any strides;
        ``num_q_heads`` a multiple of ``num_kv_heads`` (grouped-query attention)
    k_cache, v_cache : [num_layers, num_blocks, block_size, num_kv_heads, head_dim], as in :func:`copy_blocks`
    layer : int in ``[0, num_layers)``
    block_tables : int32 or int64 [S, max_blocks]; entries past a sequence's last block are ignored
    seq_lens : int64 [S]: tokens in each sequence's cache, its new tokens included
    query_lens : int64 [S]: new tokens per sequence, ``0 <= query_lens <= seq_lens``, summing to ``T_total``
    scale : float, optional
        Multiplies the scores; default ``1 / sqrt(head_dim)``.
    out : [T_total, num_q_heads, head_dim] of q's dtype, contiguous, optional
        Written in place and returned (no allocation on the hot path).
    check_indices : False skips the Python checks of the values of ``block_tables``,
        ``seq_lens`` and ``query_lens`` (checked once per step by the caller); the compiled
        CPU kernel still bounds-checks what it reads
    backend : {"reference", "cpu", "cuda", "triton"}, optional

    Returns
    -------
    [T_total, num_q_heads, head_dim] in q's dtype (``out`` when given). Scores, softmax
    and the weighted sum are computed in float32.
    """
    check_tensor("q", q)
    _check_caches(k_cache, v_cache)
    layer = _check_layer(layer, k_cache)
    num_kv_heads, head_dim = k_cache.shape[3:]
    if q.dim() != 3 or q.shape[2] != head_dim or q.shape[1] == 0 or q.shape[1] % num_kv_heads:
        raise ValueError(f"q must be [T_total, num_q_heads, {head_dim}] with num_q_heads a positive multiple of "
                         f"num_kv_heads = {num_kv_heads}, got shape {tuple(q.shape)}")
    _check_same_dtype_and_device("q", q, k_cache)
    _check_index("block_tables", block_tables, k_cache, dims=2, dtypes=(torch.int32, torch.int64))
    _check_index("seq_lens", seq_lens, k_cache, dims=1)
    _check_index("query_lens", query_lens, k_cache, dims=1)
    num_seqs = block_tables.shape[0]
    for name, lens in (("seq_lens", seq_lens), ("query_lens", query_lens)):
        if lens.shape[0] != num_seqs:
            raise ValueError(f"{name} must have shape [{num_seqs}] (one per block table row), got {tuple(lens.shape)}")
    if check_indices and values_checkable(seq_lens):
        _check_attention_values(k_cache, block_tables, seq_lens, query_lens, q.shape[0])
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float, got {scale!r}")
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    else:
        check_tensor("out", out)
        if out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous {q.dtype} tensor of shape {tuple(q.shape)} on {q.device}, "
                             f"got a {out.dtype} tensor of shape {tuple(out.shape)} on {out.device} "
                             f"(contiguous: {out.is_contiguous()})")
    _run("paged_attention", backend, k_cache.device, q, k_cache, v_cache, layer, block_tables, seq_lens, query_lens,
         float(scale), out)
    return out
