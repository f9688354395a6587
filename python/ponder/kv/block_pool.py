"""Reference-counted pool of KV-cache blocks, with a content-addressed prefix cache.

Pure bookkeeping: block ids, reference counts, the free list and the prefix cache. The
K/V tensors live in :class:`ponder.kv.cache.KVCache`.

A block's reference count is its number of *holders*. For
:class:`~ponder.kv.cache.KVCache` a holder is a sequence's private tail of blocks or a
frozen run of full blocks that any number of forked sequences share
(:mod:`ponder.kv.block_table`): a run counts once, however many sequences reach it.

A block is in exactly one of three states:

* in use: held by one or more holders (``ref_count > 0``);
* cached: unreferenced but registered under the hash of the tokens it holds, so a new
  sequence with the same prefix can take it back; evicted least-recently-used first;
* free: unreferenced and unregistered.

Every method that can fail checks first and changes nothing when it raises.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


class OutOfBlocks(RuntimeError):
    """The pool cannot hold what a step needs. Nothing was changed."""


class BlockStateError(RuntimeError):
    """A block or sequence was used in a state that does not allow it (double free, use after free)."""


@dataclass(frozen=True)
class PoolStats:
    num_blocks: int
    used: int  # held by at least one holder
    shared: int  # held by two or more holders (KVCache.stats() counts sequences' tables instead)
    cached: int  # unreferenced, kept for prefix reuse
    free: int  # unreferenced and unregistered

    @property
    def available(self) -> int:
        """Blocks an allocation can get: free ones plus evictable cached ones."""
        return self.free + self.cached


class BlockPool:
    """Reference counts and prefix cache over ``num_blocks`` block ids."""

    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self._ref = [0] * num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))  # a stack: block 0 is handed out first
        self._hash_of: dict[int, int] = {}  # block -> content hash, for registered blocks
        self._block_of: dict[int, int] = {}  # content hash -> block
        self._evictable: OrderedDict[int, None] = OrderedDict()  # cached blocks, least recently used first

    # -- queries -------------------------------------------------------------------
    def ref_count(self, block: int) -> int:
        return self._ref[block]

    def available(self) -> int:
        return len(self._free) + len(self._evictable)

    def lookup(self, content_hash: int) -> int | None:
        """The block registered under ``content_hash``, or None. Does not take a reference."""
        return self._block_of.get(content_hash)

    def stats(self) -> PoolStats:
        used = sum(1 for r in self._ref if r > 0)
        shared = sum(1 for r in self._ref if r > 1)
        return PoolStats(self.num_blocks, used, shared, len(self._evictable), len(self._free))

    # -- changes -------------------------------------------------------------------
    def allocate(self, n: int) -> list[int]:
        """``n`` fresh blocks with reference count 1, evicting cached blocks LRU-first if needed.

        Raises OutOfBlocks, changing nothing, when fewer than ``n`` are available.
        """
        if n > self.available():
            raise OutOfBlocks(
                f"need {n} blocks but only {self.available()} of {self.num_blocks} are available "
                f"({len(self._free)} free, {len(self._evictable)} cached); free finished sequences or "
                "make the cache larger"
            )
        blocks = []
        for _ in range(n):
            if self._free:
                block = self._free.pop()
            else:
                block, _ = self._evictable.popitem(last=False)
                self._unregister(block)
            self._ref[block] = 1
            blocks.append(block)
        return blocks

    def acquire(self, block: int) -> None:
        """Take one more reference to a block that is in use (a new holder) or cached (prefix reuse)."""
        if self._ref[block] == 0:
            if block not in self._evictable:
                raise BlockStateError(f"block {block} is free: it holds nothing to share")
            del self._evictable[block]
        self._ref[block] += 1

    def release(self, block: int) -> None:
        """Drop one reference; an unreferenced block becomes cached (if registered) or free."""
        if self._ref[block] <= 0:
            raise BlockStateError(f"block {block} released more often than acquired")
        self._ref[block] -= 1
        if self._ref[block] == 0:
            if block in self._hash_of:
                self._evictable[block] = None  # most recently used: evicted last
            else:
                self._free.append(block)

    def register(self, block: int, content_hash: int) -> int:
        """Record that ``block`` (in use, full) holds the content ``content_hash``.

        Returns the block now registered under that hash: ``block`` itself, or an
        earlier block with the same content (the caller may switch to it and release
        its own copy).
        """
        if self._ref[block] == 0:
            raise BlockStateError(f"block {block} is not in use and cannot be registered")
        existing = self._block_of.get(content_hash)
        if existing is not None:
            return existing
        if block in self._hash_of:  # a block holds one content: keep the first registration
            return block
        self._hash_of[block] = content_hash
        self._block_of[content_hash] = block
        return block

    def _unregister(self, block: int) -> None:
        content_hash = self._hash_of.pop(block)
        del self._block_of[content_hash]

    def check_invariants(self, holders: dict[int, int]) -> None:
        """Assert the pool agrees with ``holders`` (block -> number of holders).

        For tests and debugging: every block is exactly one of used / cached / free,
        and reference counts equal the number of holders.
        """
        for block in range(self.num_blocks):
            expected = holders.get(block, 0)
            if self._ref[block] != expected:
                raise AssertionError(f"block {block}: ref count {self._ref[block]} but {expected} holders")
            states = (self._ref[block] > 0) + (block in self._evictable) + (block in self._free)
            if states != 1:
                raise AssertionError(f"block {block} is in {states} states (used/cached/free)")
        if len(self._free) != len(set(self._free)):
            raise AssertionError("a block is on the free list twice")
        for block in self._evictable:
            if block not in self._hash_of:
                raise AssertionError(f"cached block {block} has no content hash")
