"""Paged KV cache: block pool, block tables, fork / copy-on-write, prefix reuse."""

from ponder.kv.block_pool import BlockPool, BlockStateError, OutOfBlocks, PoolStats
from ponder.kv.cache import CacheStats, KVCache, StepPlan

__all__ = ["BlockPool", "BlockStateError", "CacheStats", "KVCache", "OutOfBlocks", "PoolStats", "StepPlan"]
