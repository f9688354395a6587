"""KVCache plans driving the KV ops: a forked tree attends exactly like dense attention.

Each sequence's K/V history is also kept densely on the side; after prefill, fork,
copy-on-write and free, paged attention through the cache's block tables must equal
plain causal attention over that history.
"""

from __future__ import annotations

import pytest
import torch

import ponder
from ponder.kv import KVCache

LAYERS, KV_HEADS, Q_HEADS, HEAD_DIM = 2, 2, 4, 16


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of the last len(q) positions over k, v [L, KV_HEADS, HEAD_DIM]."""
    group = Q_HEADS // KV_HEADS
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = torch.einsum("ihd,jhd->hij", q, k) / HEAD_DIM**0.5
    start = k.shape[0] - q.shape[0]
    visible = torch.arange(k.shape[0])[None, :] <= (start + torch.arange(q.shape[0]))[:, None]
    return torch.einsum("hij,jhd->ihd", scores.masked_fill(~visible, float("-inf")).softmax(-1), v)


def test_tree_step_matches_dense_attention(backend_device):
    backend, device = backend_device
    if device != "cpu":
        pytest.skip("the cache in this test lives on the CPU")
    gen = torch.Generator().manual_seed(0)
    cache = KVCache(num_layers=LAYERS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM, block_size=4, num_blocks=32)
    history: dict[int, list[torch.Tensor]] = {}  # seq -> per layer [L, 2, KV_HEADS, HEAD_DIM]

    def step(seq_ids, new_tokens):
        with cache.step(seq_ids, new_tokens) as plan:
            ponder.ops.copy_blocks(cache.k, cache.v, plan.copy_src, plan.copy_dst, backend=backend)
            total = int(plan.query_lens.sum())
            for layer in range(LAYERS):
                k = torch.randn(total, KV_HEADS, HEAD_DIM, generator=gen)
                v = torch.randn(total, KV_HEADS, HEAD_DIM, generator=gen)
                q = torch.randn(total, Q_HEADS, HEAD_DIM, generator=gen)
                ponder.ops.write_kv(cache.k, cache.v, layer, k, v, plan.slot_mapping, backend=backend)
                out = ponder.ops.paged_attention(q, cache.k, cache.v, layer, plan.block_tables, plan.seq_lens,
                                                 plan.query_lens, backend=backend)
                start = 0
                for seq, n in zip(seq_ids, plan.query_lens.tolist()):
                    past = history.setdefault(seq, [torch.empty(0, 2, KV_HEADS, HEAD_DIM)] * LAYERS)
                    past[layer] = torch.cat([past[layer], torch.stack([k[start:start + n], v[start:start + n]], 1)])
                    want = dense_attention(q[start:start + n], past[layer][:, 0], past[layer][:, 1])
                    torch.testing.assert_close(out[start:start + n], want, rtol=1e-4, atol=1e-5)
                    start += n

    root, cached = cache.add_sequence(list(range(10)))
    step([root], [list(range(10))])
    children = cache.fork(root, 3)
    for child in children:
        history[child] = list(history[root])
    step(children, [[1], [2, 3], [4, 5, 6, 7, 8]])  # all three copy-on-write the half-full block
    cache.free(children[1])
    step([root, children[0], children[2]], [[9], [10, 11], [12]])
    cache.check_invariants()
