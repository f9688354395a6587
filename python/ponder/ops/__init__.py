"""Public ops: validate arguments, pick a backend, run it."""

from ponder.ops.sampling import SampleOutput, filtered_probs, sample

__all__ = ["SampleOutput", "filtered_probs", "sample"]
