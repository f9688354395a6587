"""KVCache bookkeeping: fork, copy-on-write, prefix reuse, eviction, atomic failures.

K/V contents are simulated: the K of token ``t`` at position ``p`` is ``t * 1000 + p``
(V its negative) in every layer, head and channel, so a sequence's cached K/V can be
checked against a from-scratch recomputation by gathering its slots.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ponder.kv import BlockStateError, KVCache, OutOfBlocks

BLOCK = 4


def make_cache(num_blocks=24) -> KVCache:
    return KVCache(num_layers=2, num_kv_heads=1, head_dim=2, block_size=BLOCK, num_blocks=num_blocks)


def run_step(cache: KVCache, seq_ids, new_tokens):
    """One simulated model step: copy-on-write copies, then K/V writes."""
    with cache.step(seq_ids, new_tokens) as plan:
        apply_plan(cache, plan, new_tokens)
    return plan


def apply_plan(cache, plan, new_tokens):
    cache.k[:, plan.copy_dst] = cache.k[:, plan.copy_src]
    cache.v[:, plan.copy_dst] = cache.v[:, plan.copy_src]
    tokens = torch.tensor([t for toks in new_tokens for t in toks], dtype=torch.float32)
    values = (tokens * 1000 + plan.positions.float()).view(1, -1, 1, 1)
    flat_k = cache.k.view(cache.k.shape[0], -1, *cache.k.shape[3:])
    flat_v = cache.v.view(cache.v.shape[0], -1, *cache.v.shape[3:])
    flat_k[:, plan.slot_mapping] = values
    flat_v[:, plan.slot_mapping] = -values


def assert_contents(cache: KVCache, seq_id: int):
    tokens = cache.tokens(seq_id)
    table = cache.block_table(seq_id)
    for pos, tok in enumerate(tokens):
        block, offset = table[pos // BLOCK], pos % BLOCK
        expected = tok * 1000 + pos
        assert (cache.k[:, block, offset] == expected).all(), (seq_id, pos)
        assert (cache.v[:, block, offset] == -expected).all(), (seq_id, pos)


def snapshot(cache: KVCache):
    """Tables, token lists, stats and the K/V bytes (compared bitwise: unwritten slots of
    a cache made with torch.empty may hold NaN patterns)."""
    seqs = {s: (cache.tokens(s), cache.block_table(s)) for s in list(cache._seqs)}
    return seqs, cache.stats(), cache.k.view(torch.int32).clone(), cache.v.view(torch.int32).clone()


def test_fork_moves_no_bytes_and_copy_on_write_splits_the_last_block():
    cache = make_cache()
    seq, cached = cache.add_sequence([1, 2, 3, 4, 5, 6])
    assert cached == 0
    run_step(cache, [seq], [[1, 2, 3, 4, 5, 6]])
    used = cache.stats().blocks.used
    children = cache.fork(seq, 3)
    assert cache.stats().blocks.used == used  # no new blocks
    assert all(cache.block_table(c) == cache.block_table(seq) for c in children)
    assert cache.stats().blocks.shared == 2
    plan = run_step(cache, children, [[7], [8, 9], [10]])
    # Three children wrote into the shared half-full second block: three copies.
    assert plan.copy_src.tolist() == [cache.block_table(seq)[1]] * 3
    for s in [seq, *children]:
        assert_contents(cache, s)
    assert cache.block_table(children[0])[0] == cache.block_table(seq)[0]  # the full block stays shared
    cache.check_invariants()


def test_last_sharer_writes_in_place():
    cache = make_cache()
    seq, _ = cache.add_sequence([1, 2])
    run_step(cache, [seq], [[1, 2]])
    (child,) = cache.fork(seq, 1)
    plan = run_step(cache, [seq, child], [[3], [4]])
    assert len(plan.copy_src) == 1  # the second writer owns the old block by then
    assert_contents(cache, seq)
    assert_contents(cache, child)


def test_free_returns_unshared_blocks_and_prefix_cache_reuses_full_ones():
    cache = make_cache(num_blocks=8)
    prompt = list(range(10, 20))  # 2 full blocks + 2 tokens
    seq, _ = cache.add_sequence(prompt)
    run_step(cache, [seq], [prompt])
    cache.free(seq)
    stats = cache.stats().blocks
    assert stats.used == 0 and stats.cached == 2 and stats.free == 6
    again, cached = cache.add_sequence(prompt + [99])
    assert cached == 8
    run_step(cache, [again], [(prompt + [99])[cached:]])
    assert_contents(cache, again)
    # A prompt of exactly two blocks reuses only the first: one token must be computed.
    third, cached = cache.add_sequence(prompt[:8])
    assert cached == 4


def test_eviction_is_least_recently_used():
    cache = make_cache(num_blocks=2)
    a, _ = cache.add_sequence([1, 1, 1, 1, 7])
    run_step(cache, [a], [[1, 1, 1, 1, 7]])
    b, _ = cache.add_sequence([2, 2, 2, 2, 7])
    with pytest.raises(OutOfBlocks):
        run_step(cache, [b], [[2, 2, 2, 2, 7]])
    cache.free(a)  # block of [1,1,1,1] cached, the partial one free
    run_step(cache, [b], [[2, 2, 2, 2, 7]])  # takes the free block, then evicts the cached one
    assert cache.stats().blocks.cached == 0
    assert cache.add_sequence([1, 1, 1, 1, 5])[1] == 0


def test_out_of_blocks_changes_nothing():
    cache = make_cache(num_blocks=4)
    seq, _ = cache.add_sequence([1, 2, 3])
    run_step(cache, [seq], [[1, 2, 3]])
    kids = cache.fork(seq, 2)
    before = snapshot(cache)
    with pytest.raises(OutOfBlocks, match="needs 4 new blocks but only 3"):
        # kid 0: a copy of the shared block + 2 more blocks; kid 1: a copy: 4 > 3 free.
        cache.begin_step(kids, [[4, 5, 6, 7, 8, 9], [4]])
    after = snapshot(cache)
    assert before[0] == after[0] and before[1] == after[1]
    assert torch.equal(before[2], after[2]) and torch.equal(before[3], after[3])
    cache.check_invariants()


def test_failed_step_rolls_back():
    cache = make_cache()
    seq, _ = cache.add_sequence([1, 2, 3])
    run_step(cache, [seq], [[1, 2, 3]])
    kids = cache.fork(seq, 2)
    before = snapshot(cache)
    with pytest.raises(RuntimeError, match="model failed"):
        with cache.step(kids, [[4, 5], [6]]):
            raise RuntimeError("model failed")
    after = snapshot(cache)
    assert before[0] == after[0] and before[1] == after[1]
    cache.check_invariants()


def test_misuse_is_a_clear_error():
    cache = make_cache()
    seq, _ = cache.add_sequence([1])
    cache.free(seq)
    with pytest.raises(BlockStateError, match=f"sequence {seq} was freed"):
        cache.free(seq)
    with pytest.raises(BlockStateError, match="sequence 99 does not exist"):
        cache.fork(99, 2)
    with pytest.raises(ValueError, match="at least one prompt token"):
        cache.add_sequence([])
    other, _ = cache.add_sequence([1])
    with pytest.raises(ValueError, match="appears twice"):
        cache.begin_step([other, other], [[1], [2]])
    with pytest.raises(ValueError, match="exactly one of num_blocks, max_tokens, max_bytes"):
        KVCache(num_layers=1, num_kv_heads=1, head_dim=2, num_blocks=4, max_tokens=64)


def test_sizing_and_stats():
    cache = KVCache(num_layers=2, num_kv_heads=2, head_dim=8, block_size=16, max_tokens=100)
    assert cache.pool.num_blocks == 7
    assert cache.block_bytes == 2 * 2 * 16 * 2 * 8 * 4
    by_bytes = KVCache(num_layers=2, num_kv_heads=2, head_dim=8, block_size=16, max_bytes=10 * cache.block_bytes + 5)
    assert by_bytes.pool.num_blocks == 10
    assert cache.stats().bytes_total == 7 * cache.block_bytes


class CacheMachine(RuleBasedStateMachine):
    """Random fork / extend / free / evict / fail sequences keep every invariant."""

    def __init__(self):
        super().__init__()
        self.cache = make_cache(num_blocks=12)
        self.live: list[int] = []

    @rule(prompt=st.lists(st.integers(0, 3), min_size=1, max_size=9))
    def add(self, prompt):
        seq, cached = self.cache.add_sequence(prompt)
        try:
            run_step(self.cache, [seq], [prompt[cached:]])
        except OutOfBlocks:
            self.cache.free(seq)
            return
        self.live.append(seq)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), n=st.integers(1, 3))
    def fork(self, data, n):
        self.live.extend(self.cache.fork(data.draw(st.sampled_from(self.live)), n))

    @precondition(lambda self: self.live)
    @rule(data=st.data(), fail=st.booleans())
    def extend(self, data, fail):
        chosen = data.draw(st.lists(st.sampled_from(self.live), min_size=1, max_size=4, unique=True))
        new = [data.draw(st.lists(st.integers(0, 3), min_size=0, max_size=6)) for _ in chosen]
        before = snapshot(self.cache)
        try:
            if fail:
                with pytest.raises(RuntimeError):
                    with self.cache.step(chosen, new) as plan:
                        apply_plan(self.cache, plan, new)
                        raise RuntimeError("model failed")
                assert snapshot(self.cache)[0] == before[0]
            else:
                run_step(self.cache, chosen, new)
        except OutOfBlocks:
            after = snapshot(self.cache)
            assert after[0] == before[0] and after[1] == before[1] and torch.equal(after[2], before[2])

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data):
        seq = data.draw(st.sampled_from(self.live))
        self.live.remove(seq)
        self.cache.free(seq)

    @invariant()
    def consistent(self):
        self.cache.check_invariants()
        for seq in self.live:
            assert_contents(self.cache, seq)

    def teardown(self):
        for seq in self.live:
            self.cache.free(seq)
        stats = self.cache.stats().blocks
        assert stats.used == 0 and stats.free + stats.cached == stats.num_blocks  # nothing leaked
        self.cache.check_invariants()


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
