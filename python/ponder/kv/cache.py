"""Paged KV cache with O(1) fork, copy-on-write and prefix reuse.

Layout: ``k`` and ``v`` are tensors of shape
``[num_layers, num_blocks, block_size, num_kv_heads, head_dim]``. A sequence is a list
of block ids (its block table) and the token ids whose K/V it holds; token ``t`` of a
sequence lives in slot ``(table[t // block_size], t % block_size)``, flat slot id
``block * block_size + offset``.

* :meth:`KVCache.fork` gives children that share every block of the parent: a table
  copy and reference-count increments, no KV bytes move.
* :meth:`KVCache.step` prepares one model step for many sequences at once: it finds
  the slots of the new tokens, allocates blocks, and plans a copy of every shared,
  partially filled last block a sequence is about to write into (copy-on-write). It
  checks the pool first: when the step cannot fit it raises
  :class:`~ponder.kv.block_pool.OutOfBlocks` and changes nothing. Used as a context
  manager it rolls the step back if the model call inside fails, and registers the
  blocks the step filled in the prefix cache if it succeeds.
* Full blocks are registered under a hash chain of the token ids they complete, so
  :meth:`KVCache.add_sequence` reuses them for a new sequence with the same prefix.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from ponder.kv.block_pool import BlockPool, BlockStateError, OutOfBlocks, PoolStats

__all__ = ["KVCache", "StepPlan", "CacheStats", "OutOfBlocks", "BlockStateError"]


@dataclass
class _Sequence:
    blocks: list[int]  # block table
    tokens: list[int]  # token ids whose K/V are in the cache
    hashes: list[int]  # content hash of each full block (a hash chain)


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
    _undo: list = field(default_factory=list, repr=False)  # (seq_id, old table, old token count)
    _allocated: list[int] = field(default_factory=list, repr=False)
    _released: list[int] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class CacheStats:
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


def _chain_hash(previous: int, block_tokens: Sequence[int]) -> int:
    return hash((previous, tuple(block_tokens)))


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
        self._seqs: dict[int, _Sequence] = {}
        self._freed: set[int] = set()
        self._next_id = 0

    # -- sequences -----------------------------------------------------------------
    def _seq(self, seq_id: int) -> _Sequence:
        seq = self._seqs.get(seq_id)
        if seq is None:
            state = "was freed" if seq_id in self._freed else "does not exist"
            raise BlockStateError(f"sequence {seq_id} {state}")
        return seq

    def _new_id(self, seq: _Sequence) -> int:
        seq_id = self._next_id
        self._next_id += 1
        self._seqs[seq_id] = seq
        return seq_id

    def tokens(self, seq_id: int) -> list[int]:
        """Token ids whose K/V sequence ``seq_id`` holds."""
        return list(self._seq(seq_id).tokens)

    def block_table(self, seq_id: int) -> list[int]:
        return list(self._seq(seq_id).blocks)

    def add_sequence(self, prompt: Sequence[int]) -> tuple[int, int]:
        """Start a sequence for ``prompt`` (token ids), reusing cached blocks of its prefix.

        Returns ``(seq_id, num_cached)``: the K/V of ``prompt[:num_cached]`` are already in
        the cache; the caller computes the rest with :meth:`step`. At least one token is
        left to compute, so the model produces logits for the last position.
        """
        prompt = list(prompt)
        if not prompt:
            raise ValueError("a sequence needs at least one prompt token")
        blocks, hashes = [], []
        previous = 0
        for i in range((len(prompt) - 1) // self.block_size):
            h = _chain_hash(previous, prompt[i * self.block_size:(i + 1) * self.block_size])
            block = self.pool.lookup(h)
            if block is None:
                break
            blocks.append(block)
            hashes.append(h)
            previous = h
        for block in blocks:
            self.pool.acquire(block)
        cached = len(blocks) * self.block_size
        return self._new_id(_Sequence(blocks, prompt[:cached], hashes)), cached

    def fork(self, seq_id: int, n: int) -> list[int]:
        """``n`` children sharing every block of ``seq_id`` (which stays valid). No KV bytes move."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"fork needs n >= 1, got {n!r}")
        parent = self._seq(seq_id)
        children = []
        for _ in range(n):
            for block in parent.blocks:
                self.pool.acquire(block)
            children.append(self._new_id(_Sequence(list(parent.blocks), list(parent.tokens), list(parent.hashes))))
        return children

    def free(self, seq_id: int) -> None:
        """Release the sequence's blocks; blocks no other sequence holds return to the pool."""
        seq = self._seq(seq_id)
        for block in seq.blocks:
            self.pool.release(block)
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

    def begin_step(self, seq_ids: Sequence[int], new_tokens: Sequence[Sequence[int]]) -> StepPlan:
        """Apply the bookkeeping of a step and return its plan (see :meth:`step`).

        Raises OutOfBlocks (changing nothing) when the pool cannot hold the step.
        """
        seq_ids = list(seq_ids)
        if len(seq_ids) != len(new_tokens):
            raise ValueError(f"{len(seq_ids)} sequences but {len(new_tokens)} token lists")
        if len(set(seq_ids)) != len(seq_ids):
            raise ValueError("a sequence appears twice in one step")
        seqs = [self._seq(s) for s in seq_ids]
        bs = self.block_size

        # Count first, against simulated reference counts: a copy-on-write by one
        # sequence can leave its sibling the sole owner of the old block.
        refs: dict[int, int] = {}
        needed = 0
        for seq, new in zip(seqs, new_tokens):
            if not new:
                continue
            length = len(seq.tokens)
            if length % bs and seq.blocks:
                last = seq.blocks[-1]
                refs.setdefault(last, self.pool.ref_count(last))
                if refs[last] > 1:
                    refs[last] -= 1
                    needed += 1
            needed += -(-(length + len(new)) // bs) - -(-length // bs)
        if needed > self.pool.available():
            raise OutOfBlocks(
                f"this step needs {needed} new blocks but only {self.pool.available()} of {self.pool.num_blocks} "
                "are available; free finished or pruned sequences, or make the cache larger"
            )

        plan = StepPlan(seq_ids, *([None] * 7))
        copies, slots, positions = [], [], []
        for seq_id, seq, new in zip(seq_ids, seqs, new_tokens):
            plan._undo.append((seq_id, list(seq.blocks), len(seq.tokens)))
            length = len(seq.tokens)
            if new and length % bs and self.pool.ref_count(seq.blocks[-1]) > 1:
                (fresh,) = self.pool.allocate(1)
                plan._allocated.append(fresh)
                copies.append((seq.blocks[-1], fresh))
                self.pool.release(seq.blocks[-1])
                plan._released.append(seq.blocks[-1])
                seq.blocks[-1] = fresh
            grow = -(-(length + len(new)) // bs) - len(seq.blocks)
            if grow > 0:
                fresh_blocks = self.pool.allocate(grow)
                plan._allocated.extend(fresh_blocks)
                seq.blocks.extend(fresh_blocks)
            for pos in range(length, length + len(new)):
                slots.append(seq.blocks[pos // bs] * bs + pos % bs)
                positions.append(pos)
            seq.tokens.extend(int(t) for t in new)

        device = self.k.device
        as_long = lambda values: torch.tensor(values, dtype=torch.int64, device=device)  # noqa: E731
        plan.copy_src = as_long([c[0] for c in copies])
        plan.copy_dst = as_long([c[1] for c in copies])
        plan.slot_mapping = as_long(slots)
        plan.positions = as_long(positions)
        plan.query_lens = as_long([len(t) for t in new_tokens])
        plan.seq_lens = as_long([len(s.tokens) for s in seqs])
        width = max((len(s.blocks) for s in seqs), default=0)
        plan.block_tables = torch.tensor([s.blocks + [0] * (width - len(s.blocks)) for s in seqs],
                                         dtype=torch.int32, device=device).reshape(len(seqs), width)
        return plan

    def rollback(self, plan: StepPlan) -> None:
        """Undo :meth:`begin_step`: tables, token lists and reference counts as before it."""
        for block in plan._released:
            self.pool.acquire(block)
        for block in plan._allocated:
            self.pool.release(block)
        for seq_id, blocks, length in plan._undo:
            seq = self._seqs[seq_id]
            seq.blocks = blocks
            del seq.tokens[length:]

    def commit(self, plan: StepPlan) -> None:
        """Register the blocks the step completed (their K/V are now written) for prefix reuse."""
        bs = self.block_size
        for seq_id in plan.seq_ids:
            seq = self._seqs[seq_id]
            for i in range(len(seq.hashes), len(seq.tokens) // bs):
                previous = seq.hashes[-1] if seq.hashes else 0
                h = _chain_hash(previous, seq.tokens[i * bs:(i + 1) * bs])
                self.pool.register(seq.blocks[i], h)
                seq.hashes.append(h)

    # -- introspection ---------------------------------------------------------------
    def stats(self) -> CacheStats:
        return CacheStats(self.pool.stats(), self.block_bytes, len(self._seqs),
                          sum(len(s.tokens) for s in self._seqs.values()))

    def check_invariants(self) -> None:
        """Assert reference counts equal the number of tables holding each block (tests, debugging)."""
        holders: dict[int, int] = {}
        for seq in self._seqs.values():
            for block in seq.blocks:
                holders[block] = holders.get(block, 0) + 1
            if len(seq.blocks) != -(-len(seq.tokens) // self.block_size):
                raise AssertionError(f"a table of {len(seq.blocks)} blocks holds {len(seq.tokens)} tokens")
        self.pool.check_invariants(holders)
