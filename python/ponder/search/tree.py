"""The search tree a method built: every step it sampled, its score, and what became of it.

Nodes are keyed by the policy branch's ``uid``. :meth:`SearchTree.to_dict` /
:meth:`SearchTree.save_json` export it; :meth:`SearchTree.render` draws one prompt's tree
to a PNG (needs matplotlib: ``pip install matplotlib``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Node", "SearchTree"]


@dataclass
class Node:
    """One step of one partial solution.

    ``status``: ``"open"`` (still in the search), ``"pruned"``, ``"kept"`` (survived a
    selection), ``"final"`` (a candidate answer), ``"chosen"`` (the answer's path), or
    ``"rollout"`` (a look-ahead or Monte-Carlo roll-out, freed after scoring).
    """

    uid: int
    parent: int | None
    prompt: int
    depth: int
    text: str
    score: float | None = None
    finished: bool = False
    answer: str | None = None
    status: str = "open"
    visits: int | None = None  # MCTS: visit count
    value: float | None = None  # MCTS: mean back-propagated value


class SearchTree:
    def __init__(self):
        self.nodes: dict[int, Node] = {}

    def add(self, uid: int, parent: int | None, prompt: int, text: str, *, finished: bool = False,
            status: str = "open") -> Node:
        depth = 0 if parent is None else self.nodes[parent].depth + 1
        node = Node(uid, parent, prompt, depth, text, finished=finished, status=status)
        self.nodes[uid] = node
        return node

    def path(self, uid: int) -> list[Node]:
        """The nodes from the root to ``uid``."""
        out = []
        node: Node | None = self.nodes[uid]
        while node is not None:
            out.append(node)
            node = None if node.parent is None else self.nodes[node.parent]
        return out[::-1]

    def to_dict(self) -> dict:
        return {"nodes": [asdict(n) for n in self.nodes.values()]}

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def render(self, path: str | Path, prompt: int = 0, *, max_label: int = 18) -> Path:
        """Draw the tree of prompt ``prompt`` to a PNG: depth downwards, leaves side by side.

        Nodes are coloured by score (red 0 to green 1, grey unscored); the chosen path is
        drawn thick, pruned branches faint, roll-outs dashed.
        """
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ImportError("rendering a search tree needs matplotlib: pip install matplotlib") from error
        nodes = [n for n in self.nodes.values() if n.prompt == prompt]
        if not nodes:
            raise ValueError(f"the tree has no node of prompt {prompt}")
        children: dict[int | None, list[Node]] = {}
        for n in nodes:
            children.setdefault(n.parent, []).append(n)
        x: dict[int, float] = {}
        next_leaf = [0.0]

        def place(node: Node) -> float:  # leaves left to right, parents centred over their children
            kids = children.get(node.uid, [])
            x[node.uid] = sum(place(k) for k in kids) / len(kids) if kids else next_leaf[0]
            if not kids:
                next_leaf[0] += 1.0
            return x[node.uid]

        for root in children[None]:
            place(root)
        width = max(4.0, 0.35 * next_leaf[0])
        depth = max(n.depth for n in nodes)
        fig, ax = plt.subplots(figsize=(width, 1.0 + 0.8 * depth))
        cmap = plt.get_cmap("RdYlGn")
        for n in nodes:
            if n.parent is not None and n.parent in x:
                ax.plot([x[n.parent], x[n.uid]], [-(n.depth - 1), -n.depth], color="black",
                        linewidth=2.5 if n.status == "chosen" else 0.8, alpha=0.25 if n.status == "pruned" else 0.9,
                        linestyle="--" if n.status == "rollout" else "-", zorder=1)
            colour = "lightgrey" if n.score is None or math.isnan(n.score) else cmap(n.score)
            ax.scatter([x[n.uid]], [-n.depth], s=60 if n.status == "chosen" else 25, color=colour,
                       edgecolors="black", linewidths=0.5, zorder=2)
        for n in nodes:
            if n.status in ("chosen", "final") and n.finished:
                label = n.answer if n.answer is not None else n.text[:max_label]
                ax.annotate(label, (x[n.uid], -n.depth), textcoords="offset points", xytext=(0, -10),
                            ha="center", fontsize=6, rotation=90, va="top")
        ax.set_axis_off()
        ax.set_title(f"search tree of prompt {prompt}: {len(nodes)} nodes", fontsize=9)
        path = Path(path)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        return path
