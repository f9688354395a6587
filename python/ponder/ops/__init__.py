"""Public ops: validate arguments, pick a backend, run it."""

from ponder.ops.kv_ops import copy_blocks, paged_attention, write_kv
from ponder.ops.sampling import SampleOutput, filtered_probs, sample

__all__ = ["SampleOutput", "copy_blocks", "filtered_probs", "paged_attention", "sample", "write_kv"]
