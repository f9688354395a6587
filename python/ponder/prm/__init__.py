"""Process and outcome reward models on ponder's model runner, scored incrementally on a KV tree.

* :func:`load_prm` reads a Hugging Face checkpoint directory into a :class:`PRM`, with a
  tag-pair, classification or value head and a text format (presets in :data:`FORMATS`).
* :class:`IncrementalScorer` (``prm.scorer(...)``) keeps the PRM's KV tree beside the
  policy's: fork, extend by new steps, free; each call is one batched forward over the
  new tokens only.
* :class:`ProgressScorer` scores progress (PAV): ``Q + alpha * A`` under a prover PRM.
"""

from ponder.prm.formats import FORMATS, PRMFormat
from ponder.prm.heads import LinearHead, ScoreHead, TagPairHead
from ponder.prm.incremental import IncrementalScorer, ScoredSteps
from ponder.prm.model import AGGREGATES, PRM, load_prm
from ponder.prm.progress import ProgressScorer

__all__ = ["AGGREGATES", "FORMATS", "IncrementalScorer", "LinearHead", "PRM", "PRMFormat", "ProgressScorer",
           "ScoreHead", "ScoredSteps", "TagPairHead", "load_prm"]
