"""Public ops: validate arguments, pick a backend, run it."""

from ponder.ops.kv_ops import copy_blocks, paged_attention, write_kv
from ponder.ops.linear import linear, linear_backend
from ponder.ops.sampling import SampleOutput, filtered_probs, sample
from ponder.ops.scoring import StepScores, VoteResult, step_scores, vote

__all__ = ["SampleOutput", "StepScores", "VoteResult", "copy_blocks", "filtered_probs", "linear", "linear_backend",
           "paged_attention", "sample", "step_scores", "vote", "write_kv"]
