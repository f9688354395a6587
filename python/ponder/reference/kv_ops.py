"""Reference ops on the paged KV cache: ``copy_blocks``, ``write_kv`` and ``paged_attention``.

Pure PyTorch, written to be obviously right rather than fast: the definition of the
ops in :mod:`ponder.ops.kv_ops` and the oracle every backend is tested against.

Layout, per model:

* ``k_cache`` and ``v_cache`` are tensors of shape
  ``[num_layers, num_blocks, block_size, num_kv_heads, head_dim]``, contiguous, of one
  float dtype; a layer's cache is ``k_cache[layer]``.
* A sequence is a block table (block ids, int32 or int64); its token ``t`` lives in slot
  ``(table[t // block_size], t % block_size)``. A *flat slot id* is
  ``block * block_size + offset`` (so ``k_cache[layer].view(-1, num_kv_heads, head_dim)[slot]``
  is one token's keys).

Attention (``paged_attention``) reads each sequence's K/V through its block table. The
new query tokens of a step are packed back to back: sequence ``s`` owns ``query_lens[s]``
consecutive rows of ``q``, and ``seq_lens[s]`` counts every token in its cache, the new
ones included (their K/V are written with ``write_kv`` before attending). Query ``i`` of
sequence ``s`` sits at position ``seq_lens[s] - query_lens[s] + i`` and attends to the
positions ``<=`` its own (causal). Query head ``h`` reads KV head
``h // (num_q_heads // num_kv_heads)`` (grouped-query attention). Scores and softmax are
float32; the output has q's dtype.
"""

from __future__ import annotations

import torch


def copy_blocks(k_cache: torch.Tensor, v_cache: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    """Copy block ``src[i]`` to block ``dst[i]`` in every layer of both caches, in place.

    ``src``, ``dst`` int64 [N]; no ``dst`` appears twice or is also a ``src``, so the
    order of the copies does not matter.
    """
    k_cache[:, dst] = k_cache[:, src]
    v_cache[:, dst] = v_cache[:, src]


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Write ``k[t]``, ``v[t]`` ([num_kv_heads, head_dim]) into flat slot ``slot_mapping[t]`` of ``layer``.

    ``k``, ``v`` [T, num_kv_heads, head_dim] of the caches' dtype; ``slot_mapping`` int64
    [T], distinct slots, ``-1`` to skip a token (padding).
    """
    num_kv_heads, head_dim = k_cache.shape[-2:]
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    k_cache[layer].view(-1, num_kv_heads, head_dim)[slots] = k[keep]
    v_cache[layer].view(-1, num_kv_heads, head_dim)[slots] = v[keep]


def gather_kv(cache: torch.Tensor, layer: int, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """The first ``length`` tokens of one sequence from ``cache[layer]``: [length, num_kv_heads, head_dim]."""
    block_size = cache.shape[2]
    positions = torch.arange(length, device=cache.device)
    blocks = block_table.to(cache.device, torch.int64)[positions // block_size]
    return cache[layer, blocks, positions % block_size]


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, layer: int,
                    block_tables: torch.Tensor, seq_lens: torch.Tensor, query_lens: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """Causal attention of the packed new queries over each sequence's cached K/V.

    ``q`` [T_total, num_q_heads, head_dim]; ``block_tables`` int32/int64 [S, max_blocks];
    ``seq_lens``, ``query_lens`` int64 [S] with ``sum(query_lens) == T_total`` and
    ``query_lens <= seq_lens``. Returns [T_total, num_q_heads, head_dim] in q's dtype.
    """
    num_q_heads = q.shape[1]
    group = num_q_heads // k_cache.shape[3]
    out = torch.empty_like(q)
    start = 0
    for s, (seq_len, query_len) in enumerate(zip(seq_lens.tolist(), query_lens.tolist())):
        k = gather_kv(k_cache, layer, block_tables[s], seq_len).float().repeat_interleave(group, dim=1)
        v = gather_kv(v_cache, layer, block_tables[s], seq_len).float().repeat_interleave(group, dim=1)
        queries = q[start:start + query_len].float()
        scores = torch.einsum("ihd,jhd->hij", queries, k) * scale  # [heads, queries, keys]
        query_pos = torch.arange(seq_len - query_len, seq_len, device=q.device)
        visible = torch.arange(seq_len, device=q.device)[None, :] <= query_pos[:, None]
        probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        out[start:start + query_len] = torch.einsum("hij,jhd->ihd", probs, v).to(q.dtype)
        start += query_len
    return out
