"""Search methods over a policy and a verifier: best-of-N, beam, lookahead, DVTS, MCTS, revisions.

Each method takes a :class:`~ponder.search.policy.Policy` (e.g. :class:`ModelPolicy`, a
model on ponder's paged KV cache), a :class:`~ponder.search.verifier.Verifier` (e.g.
:class:`PRMVerifier` over an incremental PRM scorer), the questions, and an
``answer_of`` function that reads a finished branch's final answer. It returns a
:class:`SearchResult`: per prompt the selected answer and solution and every candidate
with its score, the search tree, and what it spent (:class:`Spend`).

:mod:`ponder.search.compute_optimal` picks a method per difficulty bin for a budget.
"""

from ponder.search.beam import beam_search, lookahead_search
from ponder.search.best_of_n import best_of_n
from ponder.search.budget import Spend
from ponder.search.dvts import dvts
from ponder.search.mcts import mcts
from ponder.search.revisions import revisions
from ponder.search.engine import Candidate, PromptResult, SearchResult
from ponder.search.policy import GREEDY, Branch, ModelPolicy, Policy, Sampling, Step
from ponder.search.tree import Node, SearchTree
from ponder.search.verifier import (CheckerVerifier, MonteCarloProgressVerifier, MonteCarloVerifier, PRMVerifier,
                                   Verifier, best_of_value)

__all__ = ["GREEDY", "Branch", "Candidate", "CheckerVerifier", "ModelPolicy", "MonteCarloProgressVerifier",
           "MonteCarloVerifier", "Node", "PRMVerifier", "Policy", "PromptResult", "Sampling", "SearchResult",
           "SearchTree", "Spend", "Step", "Verifier", "beam_search", "best_of_n", "best_of_value", "dvts",
           "lookahead_search", "mcts", "revisions"]
