"""A sequence's block table as a persistent structure, so that forking costs O(1) in its length.

Pure bookkeeping, like :mod:`ponder.kv.block_pool`: block ids, token ids and content
hashes; reference counts in the pool are taken and dropped by :class:`ponder.kv.cache.KVCache`.

A table is a chain of frozen :class:`Prefix` runs, shared by every sequence forked from
them, followed by a private, mutable tail::

    Prefix <- Prefix <- ... <- Prefix <- BlockTable(prefix, tail blocks / tokens / hashes)
    (root)                                  one per sequence

* A :class:`Prefix` holds a run of *full* blocks (block ids, the token ids they hold and
  their hash chain) and points at the run before it. It never changes once made. It
  counts what points at it (tables and later runs); when that count drops to 0 its
  blocks are released.
* The tail holds the blocks after the prefix: full blocks written since the table was
  last forked and, last, the partially filled block that steps write into.

:meth:`BlockTable.freeze` moves the tail's full blocks into a new Prefix (the arrays are
handed over, not copied) and :meth:`BlockTable.share` gives a child that points at the
same Prefix and copies the tail, which after a freeze is at most the partially filled
last block: a fork touches O(block_size) entries whatever the prefix length. The
partially filled block stays in each child's own tail, so copy-on-write sees it held
by each table separately, exactly as with flat tables.

Block ids are ``array('i')`` (C int32) rather than lists of Python ints, so that a step
assembles its ``[S, max_blocks]`` int32 block-table tensor by memcpy (:func:`stack_tables`);
converting Python ints one by one costs ~30-50 ns each, 1-2 ms for 64 tables of 8192 tokens.
"""

from __future__ import annotations

from array import array
from typing import Iterable, Sequence

import torch

BLOCK_ID = "i"  # array typecode of block ids: C int, 4 bytes, read back as torch.int32


def chain_hash(previous: int, block_tokens: Sequence[int]) -> int:
    """Content hash of a full block: its token ids, chained to the hash of the block before (0 for the first)."""
    return hash((previous, tuple(block_tokens)))


class Prefix:
    """A frozen run of full blocks, shared by every table whose chain passes through it.

    Attributes
    ----------
    parent : the run before this one, or None (the first run of the chain)
    blocks : array('i') [B]: block ids of this run (never empty)
    tokens : list[int] [B * block_size]: the token ids those blocks hold
    hashes : list[int] [B]: the hash chain of those blocks, continuing the parent's
    num_blocks, num_tokens : totals of the whole chain up to and including this run
    refs : tables and Prefixes pointing here; at 0 the run is dead
    tables : tables pointing here directly (a part of ``refs``)
    """

    __slots__ = ("parent", "blocks", "tokens", "hashes", "num_blocks", "num_tokens", "refs", "tables", "_chain")

    def __init__(self, parent: Prefix | None, blocks: array, tokens: list[int], hashes: list[int]):
        self.parent = parent
        self.blocks, self.tokens, self.hashes = blocks, tokens, hashes
        self.num_blocks = len(blocks) + (parent.num_blocks if parent else 0)
        self.num_tokens = len(tokens) + (parent.num_tokens if parent else 0)
        self.refs = 0
        self.tables = 0
        # Block ids of the whole chain, built on a step's first use and kept while a table
        # points here directly: a run only reachable through later runs would otherwise
        # keep a copy of the chain that no step reads.
        self._chain: array | None = None

    def chain(self) -> list[Prefix]:
        """This run and its ancestors, first run of the chain first."""
        runs = []
        run: Prefix | None = self
        while run is not None:
            runs.append(run)
            run = run.parent
        return runs[::-1]

    def chain_blocks(self) -> array:
        """array('i') [num_blocks]: block ids of the whole chain (cached; do not modify)."""
        if self._chain is not None:
            return self._chain
        pieces = []
        run: Prefix | None = self
        while run is not None and run._chain is None:  # down to the nearest run that has its chain built
            pieces.append(run.blocks)
            run = run.parent
        chain = array(BLOCK_ID)
        if run is not None:
            chain += run._chain
        for piece in reversed(pieces):
            chain += piece
        if self.tables:
            self._chain = chain
        return chain

    def _detach_table(self) -> None:
        self.tables -= 1
        if not self.tables:
            self._chain = None

    def check(self, block_size: int) -> None:
        """Assert the run is well formed (tests, debugging)."""
        if not self.blocks or len(self.tokens) != len(self.blocks) * block_size:
            raise AssertionError(f"a prefix run of {len(self.blocks)} blocks holds {len(self.tokens)} tokens")
        if len(self.hashes) != len(self.blocks):
            raise AssertionError(f"a prefix run of {len(self.blocks)} blocks has {len(self.hashes)} hashes")
        _check_hashes(self.parent.hashes[-1] if self.parent else 0, self.tokens, self.hashes, block_size)
        if self._chain is not None and self._chain != _concat_blocks(self.chain()):
            raise AssertionError("a prefix run's cached chain of block ids differs from its runs")
        if self._chain is not None and not self.tables:
            raise AssertionError("a prefix run no table points at keeps a cached chain")


class BlockTable:
    """One sequence's table: a shared :class:`Prefix` chain (or None) and a private tail.

    Attributes
    ----------
    prefix : the last frozen run of the chain, or None
    blocks : array('i'): block ids after the prefix; the last may be partially filled
    tokens : list[int]: token ids after the prefix (``len(blocks) == ceil(len(tokens) / block_size)``)
    hashes : list[int]: hash chain of the tail's full blocks whose K/V are committed
    """

    __slots__ = ("prefix", "blocks", "tokens", "hashes")

    def __init__(self, prefix: Prefix | None = None, blocks: Iterable[int] = (), tokens: Iterable[int] = (),
                 hashes: Iterable[int] = ()):
        self.prefix = prefix
        self.blocks = array(BLOCK_ID, blocks)
        self.tokens = list(tokens)
        self.hashes = list(hashes)
        if prefix is not None:
            prefix.refs += 1
            prefix.tables += 1

    @property
    def prefix_blocks(self) -> int:
        return self.prefix.num_blocks if self.prefix else 0

    @property
    def num_blocks(self) -> int:
        return self.prefix_blocks + len(self.blocks)

    @property
    def num_tokens(self) -> int:
        return (self.prefix.num_tokens if self.prefix else 0) + len(self.tokens)

    def block_ids(self) -> list[int]:
        return (self.prefix.chain_blocks().tolist() if self.prefix else []) + self.blocks.tolist()

    def token_ids(self) -> list[int]:
        runs = self.prefix.chain() if self.prefix else []
        return [t for run in runs for t in run.tokens] + self.tokens

    def last_hash(self) -> int:
        """Hash of the last committed full block (0 if none): where the tail's hash chain continues."""
        if self.hashes:
            return self.hashes[-1]
        return self.prefix.hashes[-1] if self.prefix else 0

    def freeze(self, block_size: int) -> Prefix | None:
        """Move the tail's full blocks into a new Prefix at the end of the chain and return it.

        Returns None, changing nothing, when the tail has no full block. The blocks keep
        their one pool reference: the new run holds it instead of this table. Every
        full block must have its hash (no step open).
        """
        full = len(self.tokens) // block_size
        if not full:
            return None
        blocks, tokens = self.blocks, self.tokens
        self.blocks = blocks[full:]  # the partially filled block, if any: O(1) entries
        self.tokens = tokens[full * block_size:]
        del blocks[full:], tokens[full * block_size:]
        run = Prefix(self.prefix, blocks, tokens, self.hashes)
        self.hashes = []
        if self.prefix is not None:
            self.prefix._detach_table()  # its reference from this table passes to the new run
        run.refs = run.tables = 1
        self.prefix = run
        return run

    def share(self) -> BlockTable:
        """A child table with the same prefix and a copy of the tail; O(len(tail)).

        The caller takes the pool references of the copied tail blocks.
        """
        return BlockTable(self.prefix, self.blocks, self.tokens, self.hashes)

    def release(self) -> list[Prefix]:
        """Detach from the prefix chain; return the runs nothing points at any more, latest first.

        The caller releases their blocks, and the tail's.
        """
        dead = []
        run, self.prefix = self.prefix, None
        if run is not None:
            run._detach_table()
        while run is not None:
            run.refs -= 1
            if run.refs:
                break
            dead.append(run)
            run = run.parent
        return dead

    def check(self, block_size: int, *, committed: bool) -> None:
        """Assert the tail is well formed; ``committed``: every full tail block has its hash (tests, debugging)."""
        if len(self.blocks) != -(-len(self.tokens) // block_size):
            raise AssertionError(f"a table tail of {len(self.blocks)} blocks holds {len(self.tokens)} tokens")
        full = len(self.tokens) // block_size
        if len(self.hashes) > full or (committed and len(self.hashes) != full):
            raise AssertionError(f"a table tail with {full} full blocks has {len(self.hashes)} hashes")
        _check_hashes(self.prefix.hashes[-1] if self.prefix else 0, self.tokens, self.hashes, block_size)


def _check_hashes(previous: int, tokens: list[int], hashes: list[int], block_size: int) -> None:
    """Assert ``hashes`` is the hash chain of the first ``len(hashes)`` blocks of ``tokens``, after ``previous``."""
    for i, h in enumerate(hashes):
        previous = chain_hash(previous, tokens[i * block_size:(i + 1) * block_size])
        if h != previous:
            raise AssertionError(f"block {i} of a run has a hash that does not match its tokens")


def _concat_blocks(runs: Iterable[Prefix]) -> array:
    out = array(BLOCK_ID)
    for run in runs:
        out += run.blocks
    return out


def stack_tables(tables: Sequence[BlockTable]) -> torch.Tensor:
    """int32 [len(tables), max num_blocks]: the tables' block ids, one row each, padded with 0 (on the CPU)."""
    width = max((t.num_blocks for t in tables), default=0)
    rows = array(BLOCK_ID)
    for t in tables:
        if t.prefix is not None:
            rows += t.prefix.chain_blocks()
        rows += t.blocks
        rows.frombytes(bytes(rows.itemsize * (width - t.num_blocks)))
    if not rows:  # torch.frombuffer refuses an empty buffer
        return torch.zeros(len(tables), width, dtype=torch.int32)
    # frombuffer shares the array's memory and keeps the array alive; nothing else refers to it.
    return torch.frombuffer(rows, dtype=torch.int32).view(len(tables), width)
