"""Monte-Carlo tree search over reasoning steps, batched across prompts.

Each iteration, in every prompt's tree at once:

1. selection: from the root, descend to the child maximising UCT,
   ``Q + c * sqrt(ln N_parent / N_child)``, or PUCT, ``Q + c * P * sqrt(N_parent) / (1 + N_child)``
   with ``P`` the softmax over siblings of the policy's step log-probabilities, until a
   leaf (a node without children) or, with progressive widening, an unfinished node that
   may have more children than it has;
2. expansion: that node gets ``k`` more sampled children (one batched expand over all
   prompts); a finished leaf is evaluated again;
3. evaluation: each new child's value is the verifier's score (``evaluate="value"``) or
   the verifier's score at the end of a roll-out of it to the end of the solution
   (``evaluate="rollout"``; the roll-outs are forks, freed after scoring);
4. back-propagation: each value is added to every node on the path, with one visit.

Progressive widening (``widening = alpha``): a node with ``N`` visits may have
``k * max(1, floor(N ** alpha))`` children, so a node whose children all look poor is
sampled again as it is visited; without it a node gets its ``k`` children once, and a
small ``k`` gives a tree that is soon exhausted.

The budget is ``iterations``, or ``max_tokens`` generated tokens per prompt (roll-outs
included), whichever ends first; without widening, a tree whose every leaf is finished
stops early. Without widening only leaves hold KV: an expanded node's blocks live on in
its children; with it, expanded nodes stay live to be forked again. The answer is the
leaf reached by following the most-visited children (``answer="visits"``), the finished
leaf of best value (``"value"``), or a weighted vote over finished leaves (``"vote"``).
Generations: the steps sampled, in units of the mean number of steps of the finished
solutions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from ponder.search.engine import AnswerOf, SearchResult, SearchRun
from ponder.search.policy import Branch, Policy, Sampling
from ponder.search.verifier import Verifier

__all__ = ["mcts", "TreeNode", "select_child", "allowed_children"]

ANSWERS = ("visits", "value", "vote")


@dataclass(eq=False)
class TreeNode:
    """MCTS statistics of one branch."""

    branch: Branch
    parent: "TreeNode | None" = None
    children: list["TreeNode"] = field(default_factory=list)
    visits: int = 0
    total: float = 0.0
    score: float = float("nan")  # the verifier's value of the node itself
    prior: float = 1.0  # PUCT's P: softmax of the step log-probabilities over the siblings

    @property
    def q(self) -> float:
        return self.total / self.visits if self.visits else 0.0


def select_child(node: TreeNode, c: float, puct: bool) -> TreeNode:
    """The child maximising UCT (or PUCT); unvisited children first, ties to the earlier child."""
    def key(child: TreeNode) -> float:
        if child.visits == 0:
            return math.inf
        if puct:
            return child.q + c * child.prior * math.sqrt(node.visits) / (1 + child.visits)
        return child.q + c * math.sqrt(math.log(node.visits) / child.visits)

    best = node.children[0]
    for child in node.children[1:]:
        if key(child) > key(best):
            best = child
    return best


def allowed_children(visits: int, k: int, widening: float | None) -> int:
    """How many children a node with ``visits`` may have: ``k``, or with progressive widening
    ``k * max(1, floor(visits ** widening))``."""
    if widening is None:
        return k
    return k * max(1, math.floor(visits ** widening))


def _select(root: TreeNode, c: float, puct: bool, k: int, widening: float | None) -> TreeNode:
    """The node to expand (or, when finished, evaluate again)."""
    node = root
    while node.children and len(node.children) >= allowed_children(node.visits, k, widening):
        node = select_child(node, c, puct)
    return node


def _set_priors(node: TreeNode) -> None:
    """PUCT priors: the softmax of the children's step log-probabilities."""
    top = max(child.branch.logprob for child in node.children)
    weights = [math.exp(child.branch.logprob - top) for child in node.children]
    for child, weight in zip(node.children, weights):
        child.prior = weight / sum(weights)


def _backpropagate(node: TreeNode, value: float) -> None:
    while node is not None:
        node.visits += 1
        node.total += value
        node = node.parent


def mcts(policy: Policy, verifier: Verifier, questions: Sequence[str], *, answer_of: AnswerOf, k: int = 4,
         iterations: int = 16, max_tokens: int | None = None, c: float = 1.0, puct: bool = False,
         widening: float | None = None, evaluate: str = "value", answer: str = "visits",
         sampling: Sampling = Sampling(), rollout_sampling: Sampling | None = None, seed: int = 0,
         progress: bool | None = None) -> SearchResult:
    """MCTS per question (see the module docstring); all trees advance together, one batch per phase."""
    if k < 1 or iterations < 1:
        raise ValueError(f"k and iterations must be >= 1, got k={k}, iterations={iterations}")
    if widening is not None and not 0 < widening <= 1:
        raise ValueError(f"widening (progressive widening's exponent) must be in (0, 1] or None, got {widening}")
    if evaluate not in ("value", "rollout"):
        raise ValueError(f"evaluate must be 'value' or 'rollout', got {evaluate!r}")
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {ANSWERS}, got {answer!r}")
    run = SearchRun(policy, verifier, answer_of, seed=seed, method="mcts", progress=progress)
    with run.running():
        roots = [TreeNode(b) for b in run.start(questions)]
        sampled_steps = 0
        for iteration in range(iterations):
            active = [root for root in roots if (widening is not None or not _exhausted(root)) and
                      (max_tokens is None or run.tokens_by_prompt[root.branch.prompt] < max_tokens)]
            if not active:
                break
            leaves = [_select(root, c, puct, k, widening) for root in active]
            grow = [leaf for leaf in leaves if not leaf.branch.finished]
            groups = run.expand([leaf.branch for leaf in grow], k, sampling)
            new: list[TreeNode] = []
            for leaf, children in zip(grow, groups):
                added = [TreeNode(child, leaf) for child in children]
                leaf.children += added
                _set_priors(leaf)
                new += added
                if widening is None:
                    run.drop(leaf.branch, "kept")  # its children hold its blocks
                else:
                    run.tree.nodes[leaf.branch.uid].status = "kept"  # live: it may be forked again
            sampled_steps += len(new)
            values = _evaluate(run, [n.branch for n in new], evaluate, rollout_sampling or sampling)
            for node, value in zip(new, values):
                node.score = value
                _backpropagate(node, value)
                if node.branch.finished:
                    run.drop(node.branch)
            for leaf in leaves:
                if leaf.branch.finished:  # selected again: its known value counts once more
                    _backpropagate(leaf, leaf.score)
            run.tick(iteration + 1, iterations)
        for root in roots:
            for node in _nodes(root):
                record = run.tree.nodes[node.branch.uid]
                record.visits, record.value = node.visits, node.q
        finals = [_answer_candidates(root, answer) for root in roots]
        depths = [len(n.branch.steps) for root in roots for n in _nodes(root) if n.branch.finished]
        run.spend.generations += math.ceil(sampled_steps * len(depths) / sum(depths)) if depths else sampled_steps
        return run.result("mcts", finals, "weighted" if answer == "vote" else "max",
                          {"k": k, "iterations": iterations, "max_tokens": max_tokens, "c": c, "puct": puct,
                           "widening": widening,
                           "evaluate": evaluate, "answer": answer, "seed": seed, "sampling": vars(sampling)})


def _nodes(root: TreeNode):
    yield root
    for child in root.children:
        yield from _nodes(child)


def _exhausted(root: TreeNode) -> bool:
    """Every leaf of the tree is a finished solution: nothing is left to expand."""
    return all(node.branch.finished for node in _nodes(root) if not node.children)


def _evaluate(run: SearchRun, branches: list[Branch], evaluate: str, sampling: Sampling) -> list[float]:
    values = run.score(branches)
    if evaluate == "rollout":
        open_ = [i for i, b in enumerate(branches) if not b.finished]
        ends = run.advance([branches[i] for i in open_], sampling, rollout=True)
        if ends:
            values[open_] = run.score(ends)
        for end in ends:
            run.drop(end)
    return values.tolist()


def _answer_candidates(root: TreeNode, answer: str) -> list[tuple[Branch, float]]:
    if answer == "visits":
        node = root
        while node.children:
            node = max(node.children, key=lambda ch: (ch.visits, ch.q, -node.children.index(ch)))
        return [] if node is root else [(node.branch, node.q)]
    return [(n.branch, n.score) for n in _nodes(root) if n.branch.finished and not n.children and n is not root]
