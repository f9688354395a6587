"""Random start / fork / extend / free / failing steps on a real (tiny) model and a small block pool.

After any sequence of operations, every live sequence's cached K and V, read through its
block table, equal transformers' K/V of that sequence's history computed from scratch,
and the pool's reference counts agree with the tables. A step that runs out of blocks
leaves the cache exactly as it was (tables, token lists, pool state and every K/V byte);
a step whose forward fails is rolled back.
"""

from __future__ import annotations

import functools
import tempfile
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import ponder
from checkpoints import Tracker, load_hf_model, save_checkpoint
from ponder.kv import OutOfBlocks

VOCAB = 64
SHARED_PROMPT = list(range(1, 14))  # prompts starting with it hit the prefix cache
MAX_LIVE = 6


@functools.cache
def tiny_models():
    """A 2-layer, hidden-32, GQA llama (ponder, transformers), made once per process."""
    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(directory, "llama_gqa", seed=3, vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8)
        return ponder.load_model(directory), load_hf_model(directory)


def snapshot(cache):
    """Everything a failed step must leave unchanged; K/V compared bitwise (torch.empty may hold NaN patterns)."""
    pool = cache.pool
    seqs = {s: (cache.tokens(s), cache.block_table(s)) for s in sorted(cache._seqs)}
    return (seqs, list(pool._ref), list(pool._free), list(pool._evictable), dict(pool._hash_of),
            cache.k.view(torch.int32).clone(), cache.v.view(torch.int32).clone())


def assert_same(before, after):
    *tables, k, v = before
    *tables_after, k_after, v_after = after
    assert tables == tables_after
    assert torch.equal(k, k_after) and torch.equal(v, v_after)


def failing_mlp(*args, **kwargs):
    """A layer's MLP that raises: the forward fails after that layer wrote its K/V."""
    raise RuntimeError("injected failure")


tokens = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=6)
prompts = st.one_of(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=10),
                    st.builds(lambda n, tail: SHARED_PROMPT[:n] + tail, st.integers(4, 13), tokens))


class PagedModelMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.run = Tracker(*tiny_models(), block_size=4, num_blocks=12)

    @property
    def live(self) -> list[int]:
        return sorted(self.run.history)

    def attempt(self, action):
        """Run ``action``; if it runs out of blocks, the cache must be exactly unchanged."""
        before = snapshot(self.run.cache)
        try:
            action()
        except OutOfBlocks:
            event("out of blocks")
            assert_same(before, snapshot(self.run.cache))

    @initialize(prompt=prompts)
    def first(self, prompt):
        self.run.start([prompt])  # from here on at least one sequence is live (free keeps one)

    def make_room(self, n: int) -> None:
        """Free the oldest sequences until ``n`` more fit under MAX_LIVE (keeps every rule enabled)."""
        while len(self.live) + n > MAX_LIVE:
            self.run.free(self.live[0])

    @rule(prompt=prompts)
    def start(self, prompt):
        self.make_room(1)
        used = self.run.cache.stats().blocks.used
        self.attempt(lambda: self.run.start([prompt]))
        if self.run.cache.stats().blocks.used < used + -(-len(prompt) // self.run.cache.block_size):
            event("prefix cache hit")

    @rule(data=st.data(), n=st.integers(1, 2))
    def fork(self, data, n):
        self.make_room(n)
        self.run.fork(data.draw(st.sampled_from(self.live)), n)

    @rule(data=st.data())
    def extend(self, data):
        seqs = data.draw(st.lists(st.sampled_from(self.live), min_size=1, max_size=3, unique=True))
        new = [data.draw(tokens) for _ in seqs]
        self.attempt(lambda: self.run.step(seqs, new))

    @precondition(lambda self: len(self.live) > 1)  # keep one, so that most rules stay enabled
    @rule(data=st.data())
    def free(self, data):
        self.run.free(data.draw(st.sampled_from(self.live)))

    @rule(data=st.data(), layer=st.integers(0, 1))
    def failing_step(self, data, layer):
        seqs = data.draw(st.lists(st.sampled_from(self.live), min_size=1, max_size=3, unique=True))
        new = [data.draw(tokens) for _ in seqs]
        cache = self.run.cache
        tables = {s: (cache.tokens(s), cache.block_table(s)) for s in self.live}
        with mock.patch.object(self.run.model.layers[layer], "mlp", failing_mlp):
            with pytest.raises((RuntimeError, OutOfBlocks)) as raised:  # OutOfBlocks: refused before the forward
                self.run.model.step(cache, seqs, new)
        event(f"failing step: {raised.type.__name__}")
        assert {s: (cache.tokens(s), cache.block_table(s)) for s in self.live} == tables

    @invariant()
    def cache_matches_recomputation(self):
        self.run.cache.check_invariants()
        for seq in self.live:
            self.run.check_kv(seq)


TestPagedModelMachine = PagedModelMachine.TestCase
TestPagedModelMachine.settings = settings(max_examples=40, stateful_step_count=12, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])


def test_out_of_blocks_in_model_step_changes_nothing():
    run = Tracker(*tiny_models(), block_size=4, num_blocks=6)
    a, = run.start([SHARED_PROMPT[:10]])  # three blocks, the last half full
    b, c = run.fork(a, 2)
    run.step([b], [[1, 2, 3]])  # copy-on-write: b has its own third block
    run.free(c)
    before = snapshot(run.cache)  # blocks 0-4 in use, one free
    with pytest.raises(OutOfBlocks, match="needs 2 new blocks but only 1 of 6"):  # a grows by two blocks
        run.model.step(run.cache, [a, b], [[4, 5, 6, 7, 8, 9, 10], [7, 8]])
    assert_same(before, snapshot(run.cache))
    with pytest.raises(OutOfBlocks):
        run.model.start(run.cache, [list(range(20, 40))])
    assert_same(before, snapshot(run.cache))
    run.step([a, b], [[4], [7]])  # still usable afterwards
    for seq in (a, b):
        run.check_kv(seq)


def test_a_start_that_runs_out_of_blocks_keeps_the_eviction_order():
    """Found by the machine: a prompt reusing cached prefix blocks, then out of room, must not
    move those blocks to the recently-used end of the eviction order."""
    model, hf = tiny_models()
    run = Tracker(model, hf, block_size=4, num_blocks=12)
    (first,) = run.start([SHARED_PROMPT[:9]])  # two full blocks go to the prefix cache
    run.free(first)  # ... unreferenced: cached, evictable, in a least-recently-used order
    (other,) = run.start([[0] * 9])
    run.free(other)
    before = snapshot(run.cache)
    assert len(before[3]) >= 2  # cached blocks of both prompts in the eviction order
    with pytest.raises(OutOfBlocks):
        run.start([SHARED_PROMPT[:9] + list(range(20, 60))])  # reuses two blocks, then needs 10 more
    assert_same(before, snapshot(run.cache))
