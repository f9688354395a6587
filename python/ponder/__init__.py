"""ponder: fast primitives and search methods for LLM test-time compute."""

import torch  # noqa: F401  (loads libtorch before the extension, which has no RPATH to it)

from ponder.ops import (SampleOutput, StepScores, VoteResult, copy_blocks, filtered_probs, linear, paged_attention,
                        sample, step_scores, vote, write_kv)
from ponder.models import load_model  # noqa: E402  (after ponder.ops, which the models use)
from ponder.prm import load_prm  # noqa: E402

__version__ = "0.1.0"
__all__ = ["SampleOutput", "StepScores", "VoteResult", "copy_blocks", "filtered_probs", "linear", "load_model",
           "load_prm", "paged_attention", "sample", "step_scores", "vote", "write_kv", "__version__"]
