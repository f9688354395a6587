"""KVCache fork and free against a list-copying model; fork cost independent of the prefix length.

The model keeps what the cache looked like before tables became shared structures: per
sequence, a full copy of its token list and of its block table, copied again at every
fork. From those lists alone it predicts each step's copy-on-write copies, whether the
step runs out of blocks, and the ``used`` / ``shared`` counts of ``stats()``; the cache
must agree, and every sequence's K/V read through its table must match its tokens.

Cost is checked by counting, not timing: pool calls and traced allocations of a fork
must not grow with the prefix length.
"""

from __future__ import annotations

import contextlib
import random
import tracemalloc
from collections import Counter

import pytest
import torch
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ponder.kv import BlockStateError, KVCache, OutOfBlocks
from test_cache import BLOCK, apply_plan, make_cache

MAX_LIVE = 48
PROMPTS = st.lists(st.integers(0, 3), min_size=1, max_size=12)


class ListModel:
    """Per sequence a plain copy of its tokens and block table; checks the cache after each operation."""

    def __init__(self, cache: KVCache):
        self.cache = cache
        self.tokens: dict[int, list[int]] = {}
        self.tables: dict[int, list[int]] = {}

    def add(self, prompt: list[int]) -> int | None:
        """add_sequence + a step computing the rest of the prompt; None if the cache is full."""
        seq, cached = self.cache.add_sequence(prompt)
        self.tokens[seq], self.tables[seq] = prompt[:cached], self.cache.block_table(seq)
        if self.step([seq], [prompt[cached:]]):
            return seq
        self.free(seq)
        return None

    def fork(self, seq: int, n: int) -> list[int]:
        children = self.cache.fork(seq, n)
        for child in children:
            self.tokens[child], self.tables[child] = list(self.tokens[seq]), list(self.tables[seq])
        return children

    def free(self, seq: int) -> None:
        self.cache.free(seq)
        del self.tokens[seq], self.tables[seq]

    def step(self, seqs: list[int], new: list[list[int]], *, fail: bool = False) -> bool:
        """One step, predicted from the lists; False if it ran out of blocks (as predicted)."""
        holders = Counter(b for table in self.tables.values() for b in table)
        copies, needed = [], 0
        for seq, toks in zip(seqs, new):
            length = len(self.tokens[seq])
            if toks and length % BLOCK:
                last = self.tables[seq][-1]
                if holders[last] > 1:  # shared partially filled block: copy-on-write
                    holders[last] -= 1
                    copies.append(last)
            needed += -(-(length + len(toks)) // BLOCK) - -(-length // BLOCK)
        needed += len(copies)
        before = {s: (self.cache.tokens(s), self.cache.block_table(s)) for s in self.tokens}
        if needed > self.cache.pool.num_blocks - len(holders):
            with pytest.raises(OutOfBlocks):
                self.cache.begin_step(seqs, new)
            assert {s: (self.cache.tokens(s), self.cache.block_table(s)) for s in self.tokens} == before
            return False
        failure = pytest.raises(RuntimeError, match="model failed") if fail else contextlib.nullcontext()
        with failure, self.cache.step(seqs, new) as plan:
            assert plan.copy_src.tolist() == copies
            apply_plan(self.cache, plan, new)
            if fail:
                raise RuntimeError("model failed")
        if fail:
            assert {s: (self.cache.tokens(s), self.cache.block_table(s)) for s in self.tokens} == before
            return True
        others = {b for s, table in self.tables.items() if s not in seqs for b in table}
        for seq, toks in zip(seqs, new):
            old, table = self.tables[seq], self.cache.block_table(seq)
            full = len(self.tokens[seq]) // BLOCK
            assert table[:full] == old[:full]  # full blocks never move
            assert not toks or others.isdisjoint(table[full:])  # written blocks (new, copied, in place) are its own
            self.tokens[seq] = self.tokens[seq] + toks
            self.tables[seq] = table
        return True

    def check(self) -> None:
        """The cache holds exactly the model's tables, tokens and K/V, and counts like the model."""
        cache = self.cache
        cache.check_invariants()
        holders = Counter(b for table in self.tables.values() for b in table)
        stats = cache.stats()
        assert stats.sequences == len(self.tokens)
        assert stats.tokens == sum(len(t) for t in self.tokens.values())
        assert stats.blocks.used == len(holders)
        assert stats.blocks.shared == sum(1 for n in holders.values() if n > 1)
        for seq, tokens in self.tokens.items():
            assert cache.tokens(seq) == tokens
            assert cache.block_table(seq) == self.tables[seq]
            assert_kv(cache, seq, tokens)


def assert_kv(cache: KVCache, seq: int, tokens: list[int]) -> None:
    """K/V of ``seq`` read through its table are those apply_plan wrote for ``tokens``."""
    table = torch.tensor(cache.block_table(seq), dtype=torch.int64)
    pos = torch.arange(len(tokens))
    want = torch.tensor(tokens, dtype=torch.float32) * 1000 + pos
    k = cache.k[:, table[pos // BLOCK], pos % BLOCK]  # [layers, T, heads, dim]
    v = cache.v[:, table[pos // BLOCK], pos % BLOCK]
    assert torch.equal(k, want.view(1, -1, 1, 1).expand_as(k)), seq
    assert torch.equal(v, -want.view(1, -1, 1, 1).expand_as(v)), seq


def deep_chain(model: ListModel, root: int, depth: int, rng: random.Random, *, keep: float,
               max_new: int) -> tuple[list[int], int]:
    """Fork of a fork of a fork ``depth`` levels down from ``root``, writing between forks.

    Each level appends 0 to ``max_new`` tokens to the current sequence, forks it into one
    or two children and goes on with the first. The sequences left behind (the parent,
    an intermediate ancestor of everything below, and the second child) are freed unless
    ``rng.random() < keep``. Returns the sequences of the chain still live, the deepest
    last, and the number of levels made: fewer than ``depth`` if the cache filled up.
    """
    live, current = [], root
    for level in range(depth):
        if not model.step([current], [[rng.randrange(4) for _ in range(rng.randrange(max_new + 1))]]):
            return live + [current], level
        parent, (current, *siblings) = current, model.fork(current, rng.choice([1, 2]))
        for seq in [parent, *siblings]:
            if rng.random() < keep:
                live.append(seq)
            else:
                model.free(seq)
    return live + [current], depth


def test_deep_fork_chain_with_ancestors_freed_matches_the_list_model():
    for seed in range(3):
        rng = random.Random(seed)
        model = ListModel(make_cache(num_blocks=400))
        root = model.add([rng.randrange(4) for _ in range(rng.randrange(1, 12))])
        live, levels = deep_chain(model, root, 60, rng, keep=0.3, max_new=8)
        assert levels == 60
        model.check()
        # Private look: the deepest table really is a long chain of frozen runs.
        assert len(model.cache._seqs[live[-1]].prefix.chain()) >= 40
        rng.shuffle(live)
        for seq in live:  # frees in any order: descendants before or after their ancestors
            model.free(seq)
            if rng.random() < 0.2:
                model.check()
        stats = model.cache.stats().blocks
        assert stats.used == 0 and stats.free + stats.cached == stats.num_blocks  # nothing leaked
        model.cache.check_invariants()


class ForkModelMachine(RuleBasedStateMachine):
    """Random add / fork / extend (some failing) / free / deep fork chains, checked against ListModel."""

    def __init__(self):
        super().__init__()
        self.model = ListModel(make_cache(num_blocks=200))

    @property
    def live(self) -> list[int]:
        return sorted(self.model.tokens)

    def make_room(self, n: int) -> None:
        while len(self.live) + n > MAX_LIVE:
            self.model.free(self.live[0])

    @initialize(prompt=PROMPTS)
    def first(self, prompt):
        self.model.add(prompt)  # from here on a sequence is live: free keeps one

    @rule(prompt=PROMPTS)
    def add(self, prompt):
        self.make_room(1)
        self.model.add(prompt)

    @rule(data=st.data(), n=st.integers(1, 3))
    def fork(self, data, n):
        self.make_room(n)
        self.model.fork(data.draw(st.sampled_from(self.live)), n)

    @rule(data=st.data(), fail=st.booleans())
    def extend(self, data, fail):
        seqs = data.draw(st.lists(st.sampled_from(self.live), min_size=1, max_size=4, unique=True))
        new = [data.draw(st.lists(st.integers(0, 3), max_size=6)) for _ in seqs]
        self.model.step(seqs, new, fail=fail)

    @precondition(lambda self: len(self.live) > 1)
    @rule(data=st.data())
    def free(self, data):
        self.model.free(data.draw(st.sampled_from(self.live)))

    @rule(data=st.data(), depth=st.integers(50, 60), seed=st.integers(0, 2**16), keep=st.sampled_from([0.0, 0.2]))
    def chain(self, data, depth, seed, keep):
        start = data.draw(st.sampled_from(self.live))
        _, levels = deep_chain(self.model, start, depth, random.Random(seed), keep=keep, max_new=5)
        event("chain complete" if levels == depth else "chain stopped: out of blocks")
        self.make_room(0)  # frees the oldest: often ancestors of what the chain left live

    @invariant()
    def matches_model(self):
        self.model.check()

    def teardown(self):
        for seq in self.live:
            self.model.free(seq)
        stats = self.model.cache.stats().blocks
        assert stats.used == 0 and stats.free + stats.cached == stats.num_blocks
        self.model.cache.check_invariants()


TestForkModelMachine = ForkModelMachine.TestCase
TestForkModelMachine.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)


# -- cost, counted ---------------------------------------------------------------------------

PREFIXES = [128, 1024, 4096, 8192]


def prefilled(prefix: int, extra: int) -> tuple[KVCache, int]:
    """A 16-token-block cache with one sequence of ``prefix + extra`` tokens, committed."""
    cache = KVCache(num_layers=1, num_kv_heads=1, head_dim=1, block_size=16, num_blocks=2 * 8192 // 16 + 256)
    tokens = [t % 50 for t in range(prefix + extra)]
    seq, _ = cache.add_sequence(tokens)
    with cache.step([seq], [tokens]):
        pass
    return cache, seq


def counting_pool(cache: KVCache) -> Counter:
    """Count every call to the pool's mutating methods (the cache's per-block work)."""
    calls: Counter = Counter()
    for name in ("acquire", "release", "allocate", "register"):
        method = getattr(cache.pool, name)

        def counted(*args, _name=name, _method=method):
            calls[_name] += 1
            return _method(*args)

        setattr(cache.pool, name, counted)
    return calls


@pytest.mark.parametrize("extra", [0, 5], ids=["full-blocks", "partial-last-block"])
@pytest.mark.parametrize("n", [4, 64])
def test_fork_work_does_not_grow_with_the_prefix(n, extra):
    work = {}
    for prefix in PREFIXES:
        cache, seq = prefilled(prefix, extra)
        calls = counting_pool(cache)
        tracemalloc.start()
        children = cache.fork(seq, n)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # The only per-block work: each child takes a reference to the partially filled block.
        assert calls == Counter({"acquire": n} if extra else {})
        work[prefix] = peak
        with cache.step(children, [[1]] * n) as plan:  # children still work: copy-on-write as before
            assert len(plan.copy_src) == (n if extra else 0)
        cache.check_invariants()
    # Copying tables would allocate n * prefix / 16 block ids and n * prefix token ids:
    # >= 32 KiB per child at 8192. A fork's own allocations are a few hundred bytes a child.
    assert max(work.values()) - min(work.values()) < 1024, work
    assert max(work.values()) < n * 1024, work


def test_free_work_is_the_blocks_it_releases():
    for prefix in PREFIXES:
        cache, root = prefilled(prefix, 5)
        children = cache.fork(root, 8)
        with cache.step(children, [[1]] * 8):  # each child copies the shared partially filled block
            pass
        calls = counting_pool(cache)
        for child in children:
            cache.free(child)
        assert calls == Counter(release=8)  # its own copy each, nothing of the shared prefix
        calls.clear()
        cache.free(root)
        assert calls == Counter(release=prefix // 16 + 1)  # the last sequence releases every block once
        assert cache.stats().blocks.used == 0


def test_fork_and_free_are_refused_while_a_step_is_open():
    cache = make_cache()
    seq, _ = cache.add_sequence([1, 2, 3, 4, 5])
    other, _ = cache.add_sequence([6])
    plan = cache.begin_step([seq, other], [[1, 2, 3, 4, 5], [6]])
    with pytest.raises(BlockStateError, match="cannot fork while a step is open"):
        cache.fork(seq, 2)
    with pytest.raises(BlockStateError, match="cannot free a sequence while a step is open"):
        cache.free(other)  # not even one the step does not write
    cache.commit(plan)
    with pytest.raises(BlockStateError, match="already committed or rolled back"):
        cache.rollback(plan)
    with pytest.raises(BlockStateError, match="while a step is open"):
        with cache.step([seq], [[7]]):
            cache.fork(other, 1)
    assert cache.tokens(seq) == [1, 2, 3, 4, 5]  # the failed step was rolled back
    cache.fork(seq, 2)
    cache.free(other)
    cache.check_invariants()


def test_stats_count_sharing_per_sequence_table():
    cache = make_cache()
    model = ListModel(cache)
    root = model.add(list(range(9)))  # two full blocks, one partially filled
    kids = model.fork(root, 3)
    grandkids = model.fork(kids[0], 2)
    model.check()
    assert cache.stats().blocks.shared == 3  # the frozen run's two blocks and the partial one, in 6 tables
    assert cache.pool.stats().shared == 1  # pool holders: one run, six tails holding the partial block
    model.step([root, *grandkids], [[1, 2, 3, 4], [5], [6]])  # three copies; kids[1:] still share the old block
    model.check()
    for seq in [root, *kids]:
        model.free(seq)
    model.check()
    assert cache.stats().blocks.shared == 2  # the run's two blocks, reached by both grandchildren


def test_fork_chain_shares_blocks_through_every_level():
    """A search-like pattern: each generation forks the previous one and frees it."""
    model = ListModel(make_cache(num_blocks=64))
    seq = model.add([1, 2, 3, 4, 5, 6])
    for generation in range(60):
        children = model.fork(seq, 2)
        model.free(seq)
        model.free(children[1])
        seq = children[0]
        model.step([seq], [[generation % 4]])
    model.check()
    assert len(model.cache.tokens(seq)) == 66
    assert model.cache.stats().blocks.used == -(-66 // BLOCK)  # nothing kept beyond the one live table

