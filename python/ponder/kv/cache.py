"""Paged KV cache with O(1) fork, copy-on-write and prefix reuse.

Layout: ``k`` and ``v`` are tensors of shape
``[num_layers, num_blocks, block_size, num_kv_heads, head_dim]``. A sequence is a list
of block ids (its block table) and the token ids whose K/V it holds; token ``t`` of a
sequence lives in slot ``(table[t // block_size], t % block_size)``, flat slot id
``block * block_size + offset``.

Tables are persistent structures (:mod:`ponder.kv.block_table`): a chain of frozen runs
of full blocks, shared by all sequences forked from them, and a private tail. The pool's
reference count of a block is the number of *holders*: each tail, and each frozen run
however many sequences share it. :meth:`KVCache.stats` reports sharing per sequence.

* :meth:`KVCache.fork` gives children that share every block of the parent: it freezes
  the parent's tail into a shared run and gives each child a pointer to it, in time
  independent of the prefix length; no KV bytes move. Freeing a sequence releases its
  tail and the runs no other sequence reaches.
* :meth:`KVCache.step` prepares one model step for many sequences at once: it finds
  the slots of the new tokens, allocates blocks, and plans a copy of every shared,
  partially filled last block a sequence is about to write into (copy-on-write). It
  checks the pool first: when the step cannot fit it raises
  :class:`~ponder.kv.block_pool.OutOfBlocks` and changes nothing. Used as a context
  manager it rolls the step back if the model call inside fails, and registers the
  blocks the step filled in the prefix cache if it succeeds.
* Full blocks are registered under a hash chain of the token ids they complete, so
  :meth:`KVCache.add_sequence` reuses them for a new sequence with the same prefix.

Between :meth:`KVCache.begin_step` and its :meth:`KVCache.commit` or
:meth:`KVCache.rollback` (inside ``with cache.step(...)``), :meth:`KVCache.fork` and
:meth:`KVCache.free` are refused: a fork would freeze blocks the step has not written
nor hashed yet, a free would return blocks the step writes into, and the step's undo
record refers to the tables as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from ponder.kv.block_pool import BlockPool, BlockStateError, OutOfBlocks, PoolStats
from ponder.kv.block_table import BlockTable, Prefix, chain_hash, stack_tables

__all__ = ["KVCache", "StepPlan", "CacheStats", "OutOfBlocks", "BlockStateError"]


@dataclass
class StepPlan:
    """What one model step must do, in order: copy blocks, write K/V, attend.

    Attributes
    ----------
    seq_ids : the sequences of the step, in batch order
    copy_src, copy_dst : int64 [C]: copy block ``copy_src[i]`` to ``copy_dst[i]`` (all layers)
    slot_mapping : int64 [T]: the slot of each new token, sequences back to back
    query_lens : int64 [S]: new tokens per sequence
    seq_lens : int64 [S]: tokens per sequence after the step (new ones included)
    block_tables : int32 [S, max_blocks]: block tables, padded with 0
    positions : int64 [T]: position of each new token in its sequence
    """

    seq_ids: list[int]
    copy_src: torch.Tensor
    copy_dst: torch.Tensor
    slot_mapping: torch.Tensor
    query_lens: torch.Tensor
    seq_lens: torch.Tensor
    block_tables: torch.Tensor
    positions: torch.Tensor
    # (table, number of tail blocks, last tail block, number of tail tokens) before the
    # step: a step only appends to tails and may replace their last block (copy-on-write).
    _undo: list = field(default_factory=list, repr=False)
    _allocated: list[int] = field(default_factory=list, repr=False)
    _released: list[int] = field(default_factory=list, repr=False)
    _open: bool = field(default=True, repr=False)  # until committed or rolled back


@dataclass(frozen=True)
class CacheStats:
    """Occupancy of a :class:`KVCache`.

    ``blocks`` is the pool's :class:`~ponder.kv.block_pool.PoolStats`, except that
    ``blocks.shared`` counts the blocks in the block tables of two or more sequences (a
    frozen run reached by n sequences is in n tables), not the blocks with two or more
    pool holders.
    """

    blocks: PoolStats
    block_bytes: int  # K and V of one block, all layers
    sequences: int
    tokens: int  # tokens held, summed over sequences (shared ones counted once per sequence)

    @property
    def bytes_used(self) -> int:
        return self.blocks.used * self.block_bytes

    @property
    def bytes_total(self) -> int:
        return self.blocks.num_blocks * self.block_bytes


class KVCache:
    """K/V storage for all layers of one model, in reference-counted blocks.

    Give exactly one of ``num_blocks``, ``max_tokens`` or ``max_bytes`` to size it.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        block_size: int = 16,
        num_blocks: int | None = None,
        max_tokens: int | None = None,
        max_bytes: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        for name, value in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads), ("head_dim", head_dim),
                            ("block_size", block_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        sizes = {"num_blocks": num_blocks, "max_tokens": max_tokens, "max_bytes": max_bytes}
        given = {k: v for k, v in sizes.items() if v is not None}
        if len(given) != 1:
            raise ValueError(f"give exactly one of num_blocks, max_tokens, max_bytes; got {sorted(given) or 'none'}")
        self.block_size = block_size
        element = torch.empty((), dtype=dtype).element_size()
        self.block_bytes = 2 * num_layers * block_size * num_kv_heads * head_dim * element
        if max_tokens is not None:
            num_blocks = -(-max_tokens // block_size)
        elif max_bytes is not None:
            num_blocks = max_bytes // self.block_bytes
        if num_blocks < 1:
            raise ValueError(f"the cache must hold at least one block, got {given}")
        shape = (num_layers, num_blocks, block_size, num_kv_heads, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.pool = BlockPool(num_blocks)
        self._seqs: dict[int, BlockTable] = {}
        # Live frozen runs, in creation order: a run's parent always comes before it.
        self._prefixes: dict[Prefix, None] = {}
        self._freed: set[int] = set()
        self._next_id = 0
        self._open_steps = 0  # begun, not yet committed or rolled back

    # -- sequences -----------------------------------------------------------------
    def _seq(self, seq_id: int) -> BlockTable:
        seq = self._seqs.get(seq_id)
        if seq is None:
            state = "was freed" if seq_id in self._freed else "does not exist"
            raise BlockStateError(f"sequence {seq_id} {state}")
        return seq

    def _new_id(self, seq: BlockTable) -> int:
        seq_id = self._next_id
        self._next_id += 1
        self._seqs[seq_id] = seq
        return seq_id

    def _check_no_open_step(self, action: str) -> None:
        if self._open_steps:
            raise BlockStateError(f"cannot {action} while a step is open: commit or roll back the step "
                                  "(leave the `with cache.step(...)` block) first")

    def tokens(self, seq_id: int) -> list[int]:
        """Token ids whose K/V sequence ``seq_id`` holds. O(length)."""
        return self._seq(seq_id).token_ids()

    def block_table(self, seq_id: int) -> list[int]:
        """Block ids of sequence ``seq_id``, in token order. O(length)."""
        return self._seq(seq_id).block_ids()

    def add_sequence(self, prompt: Sequence[int]) -> tuple[int, int]:
        """Start a sequence for ``prompt`` (token ids), reusing cached blocks of its prefix.

        Returns ``(seq_id, num_cached)``: the K/V of ``prompt[:num_cached]`` are already in
        the cache; the caller computes the rest with :meth:`step`. At least one token is
        left to compute, so the model produces logits for the last position.
        """
        prompt = list(prompt)
        if not prompt:
            raise ValueError("a sequence needs at least one prompt token")
        blocks, hashes = self._cached_prefix(prompt)
        for block in blocks:
            self.pool.acquire(block)
        cached = len(blocks) * self.block_size
        return self._new_id(BlockTable(None, blocks, prompt[:cached], hashes)), cached

    def _cached_prefix(self, prompt: list[int]) -> tuple[list[int], list[int]]:
        """The prefix-cache blocks holding ``prompt``'s leading full blocks (all but its last token), and their hashes."""
        blocks, hashes = [], []
        previous = 0
        for i in range((len(prompt) - 1) // self.block_size):
            h = chain_hash(previous, prompt[i * self.block_size:(i + 1) * self.block_size])
            block = self.pool.lookup(h)
            if block is None:
                break
            blocks.append(block)
            hashes.append(h)
            previous = h
        return blocks, hashes

    def check_prompts_fit(self, prompts: Sequence[Sequence[int]]) -> None:
        """Raise OutOfBlocks, changing nothing, if starting ``prompts`` would not fit.

        Starting a prompt is :meth:`add_sequence` (which takes its cached prefix blocks,
        so an unreferenced one leaves the available pool) and a step over the rest. A
        caller starting several prompts checks them all first, so that a failure does not
        leave earlier prompts' cached blocks moved in the eviction order.
        """
        reused: set[int] = set()
        needed = 0
        for prompt in prompts:
            prompt = [int(t) for t in prompt]
            blocks, _ = self._cached_prefix(prompt)
            reused.update(b for b in blocks if self.pool.ref_count(b) == 0)
            needed += -(-len(prompt) // self.block_size) - len(blocks)
        if needed + len(reused) > self.pool.available():
            raise OutOfBlocks(
                f"starting these prompts needs {needed + len(reused)} blocks but only {self.pool.available()} of "
                f"{self.pool.num_blocks} are available; free finished or pruned sequences, or make the cache larger")

    def fork(self, seq_id: int, n: int) -> list[int]:
        """``n`` children sharing every block of ``seq_id`` (which stays valid). No KV bytes move.

        O(n * block_size), whatever the length of ``seq_id``: the parent's full blocks
        become a shared frozen run, and each child takes one more reference to the
        partially filled last block only. Not allowed while a step is open.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"fork needs n >= 1, got {n!r}")
        parent = self._seq(seq_id)
        self._check_no_open_step("fork")
        run = parent.freeze(self.block_size)
        if run is not None:
            self._prefixes[run] = None
        children = []
        for _ in range(n):
            child = parent.share()
            for block in child.blocks:  # at most the partially filled last block
                self.pool.acquire(block)
            children.append(self._new_id(child))
        return children

    def free(self, seq_id: int) -> None:
        """Release the sequence's blocks; blocks no other sequence holds return to the pool.

        O(blocks released): the sequence's own tail, and the frozen runs that no other
        sequence reaches. Not allowed while a step is open.
        """
        seq = self._seq(seq_id)
        self._check_no_open_step("free a sequence")
        for block in seq.blocks:
            self.pool.release(block)
        for run in seq.release():
            for block in run.blocks:
                self.pool.release(block)
            del self._prefixes[run]
        del self._seqs[seq_id]
        self._freed.add(seq_id)

    # -- steps ---------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, seq_ids: Sequence[int], new_tokens: Sequence[Sequence[int]]) -> Iterator[StepPlan]:
        """Plan and apply one step that appends ``new_tokens[i]`` to ``seq_ids[i]``.

        Yields the :class:`StepPlan`. If the body raises, the step is undone: tables,
        token lists and reference counts are as before, and the blocks it allocated are
        free again. Cached (unreferenced) blocks that the allocation evicted stay
        evicted, since the body may have overwritten their bytes. If the body completes,
        the blocks the step filled are registered for prefix reuse.
        """
        plan = self.begin_step(seq_ids, new_tokens)
        try:
            yield plan
        except BaseException:
            self.rollback(plan)
            raise
        self.commit(plan)

    def blocks_needed(self, seq_ids: Sequence[int], new_counts: Sequence[int]) -> int:
        """New blocks a step appending ``new_counts[i]`` tokens to ``seq_ids[i]`` would allocate.

        Compare with ``pool.available()`` to know beforehand whether the step fits (a
        caller stepping two caches together checks both before touching either).
        """
        bs = self.block_size
        # Against simulated reference counts: a copy-on-write by one sequence can leave
        # its sibling the sole owner of the old block.
        refs: dict[int, int] = {}
        needed = 0
        for seq_id, count in zip(seq_ids, new_counts):
            if not count:
                continue
            seq = self._seq(seq_id)
            length = seq.num_tokens
            if length % bs:  # the tail's last block is partially filled
                last = seq.blocks[-1]
                refs.setdefault(last, self.pool.ref_count(last))
                if refs[last] > 1:
                    refs[last] -= 1
                    needed += 1
            needed += -(-(length + count) // bs) - -(-length // bs)
        return needed

    def begin_step(self, seq_ids: Sequence[int], new_tokens: Sequence[Sequence[int]]) -> StepPlan:
        """Apply the bookkeeping of a step and return its plan (see :meth:`step`).

        Raises OutOfBlocks (changing nothing) when the pool cannot hold the step. Until
        the plan is committed or rolled back, :meth:`fork` and :meth:`free` are refused.
        """
        seq_ids = list(seq_ids)
        if len(seq_ids) != len(new_tokens):
            raise ValueError(f"{len(seq_ids)} sequences but {len(new_tokens)} token lists")
        if len(set(seq_ids)) != len(seq_ids):
            raise ValueError("a sequence appears twice in one step")
        seqs = [self._seq(s) for s in seq_ids]
        bs = self.block_size
        needed = self.blocks_needed(seq_ids, [len(new) for new in new_tokens])
        if needed > self.pool.available():
            raise OutOfBlocks(
                f"this step needs {needed} new blocks but only {self.pool.available()} of {self.pool.num_blocks} "
                "are available; free finished or pruned sequences, or make the cache larger"
            )

        plan = StepPlan(seq_ids, *([None] * 7))
        copies, slots, positions = [], [], []
        for seq, new in zip(seqs, new_tokens):
            plan._undo.append((seq, len(seq.blocks), seq.blocks[-1] if seq.blocks else None, len(seq.tokens)))
            length = seq.num_tokens
            if new and length % bs and self.pool.ref_count(seq.blocks[-1]) > 1:
                (fresh,) = self.pool.allocate(1)
                plan._allocated.append(fresh)
                copies.append((seq.blocks[-1], fresh))
                self.pool.release(seq.blocks[-1])
                plan._released.append(seq.blocks[-1])
                seq.blocks[-1] = fresh
            grow = -(-(length + len(new)) // bs) - seq.num_blocks
            if grow > 0:
                fresh_blocks = self.pool.allocate(grow)
                plan._allocated.extend(fresh_blocks)
                seq.blocks.extend(fresh_blocks)
            first = seq.prefix_blocks  # new tokens all land in the tail
            for pos in range(length, length + len(new)):
                slots.append(seq.blocks[pos // bs - first] * bs + pos % bs)
                positions.append(pos)
            seq.tokens.extend(int(t) for t in new)

        device = self.k.device
        as_long = lambda values: torch.tensor(values, dtype=torch.int64, device=device)  # noqa: E731
        plan.copy_src = as_long([c[0] for c in copies])
        plan.copy_dst = as_long([c[1] for c in copies])
        plan.slot_mapping = as_long(slots)
        plan.positions = as_long(positions)
        plan.query_lens = as_long([len(t) for t in new_tokens])
        plan.seq_lens = as_long([s.num_tokens for s in seqs])
        plan.block_tables = stack_tables(seqs).to(device)
        self._open_steps += 1
        return plan

    def _close(self, plan: StepPlan) -> None:
        if not plan._open:
            raise BlockStateError("this step was already committed or rolled back")
        plan._open = False
        self._open_steps -= 1

    def rollback(self, plan: StepPlan) -> None:
        """Undo :meth:`begin_step`: tables, token lists and reference counts as before it."""
        self._close(plan)
        for block in plan._released:
            self.pool.acquire(block)
        for block in plan._allocated:
            self.pool.release(block)
        for seq, num_blocks, last, length in plan._undo:
            del seq.blocks[num_blocks:]
            if last is not None:
                seq.blocks[-1] = last
            del seq.tokens[length:]

    def commit(self, plan: StepPlan) -> None:
        """Register the blocks the step completed (their K/V are now written) for prefix reuse."""
        self._close(plan)
        bs = self.block_size
        for seq_id in plan.seq_ids:
            seq = self._seqs[seq_id]
            for i in range(len(seq.hashes), len(seq.tokens) // bs):
                h = chain_hash(seq.last_hash(), seq.tokens[i * bs:(i + 1) * bs])
                self.pool.register(seq.blocks[i], h)
                seq.hashes.append(h)

    # -- introspection ---------------------------------------------------------------
    def stats(self) -> CacheStats:
        """Occupancy; ``blocks.shared`` counts blocks in two or more sequences' tables (see :class:`CacheStats`).

        O(live blocks + sequences + frozen runs).
        """
        reach = dict.fromkeys(self._prefixes, 0)  # run -> sequences whose table includes it
        for seq in self._seqs.values():
            if seq.prefix is not None:
                reach[seq.prefix] += 1
        for run in reversed(self._prefixes):  # later runs first: a run's count is final before its parent's
            if run.parent is not None:
                reach[run.parent] += reach[run]
        shared = sum(1 for n in self._holders(reach).values() if n > 1)
        blocks = dataclasses.replace(self.pool.stats(), shared=shared)
        return CacheStats(blocks, self.block_bytes, len(self._seqs), sum(s.num_tokens for s in self._seqs.values()))

    def _holders(self, weight: dict[Prefix, int]) -> dict[int, int]:
        """block -> holders: one per tail holding it, ``weight[run]`` per frozen run holding it."""
        holders: dict[int, int] = {}
        for run, n in weight.items():
            for block in run.blocks:
                holders[block] = holders.get(block, 0) + n
        for seq in self._seqs.values():
            for block in seq.blocks:
                holders[block] = holders.get(block, 0) + 1
        return holders

    def check_invariants(self) -> None:
        """Assert the tables and the pool agree (tests, debugging).

        Every table and frozen run is well formed; each run's counts equal the tables and
        runs pointing at it; every run is reached by some table and is registered (no
        leaks, nothing dangling); pool reference counts equal the holders of each block.
        """
        refs = dict.fromkeys(self._prefixes, 0)
        tables = dict.fromkeys(self._prefixes, 0)
        for seq in self._seqs.values():
            seq.check(self.block_size, committed=not self._open_steps)
            if seq.prefix is not None:
                if seq.prefix not in refs:
                    raise AssertionError("a table points at a frozen run that is not live")
                refs[seq.prefix] += 1
                tables[seq.prefix] += 1
        seen: set[Prefix] = set()
        for run in self._prefixes:
            run.check(self.block_size)
            if run.parent is not None:
                if run.parent not in seen:
                    raise AssertionError("a frozen run's parent is not live, or was registered after it")
                refs[run.parent] += 1
            seen.add(run)
        for run in self._prefixes:
            if (run.refs, run.tables) != (refs[run], tables[run]) or not run.refs:
                raise AssertionError(f"a frozen run counts {run.refs} references ({run.tables} tables) but "
                                     f"{refs[run]} point at it ({tables[run]} tables)")
        self.pool.check_invariants(self._holders(dict.fromkeys(self._prefixes, 1)))
