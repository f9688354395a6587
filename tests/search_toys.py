"""A synthetic policy and verifier whose trees are known exactly, and brute-force versions of the methods.

:class:`ToyPolicy`: the j-th child of an expansion appends the step ``str(j)`` (each
step is one token; with ``continue_labels``, a branch expanded again continues the count,
as MCTS's progressive widening needs); a branch is finished when its last step is
``"0"`` at depth >= 2 or when it has ``depth`` steps. :func:`value` gives every path a fixed score in [0, 1);
:class:`ToyVerifier` returns it. ``answer_of`` is the sum of the steps modulo 3.

The ``reference_*`` functions compute, from the rules alone, what each method must end
with: the final candidates (as step tuples) with their scores, and every path pruned.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import torch

from ponder.search import Branch, Step

DEPTH = 5


def value(steps: tuple[str, ...], prompt: int = 0) -> float:
    digest = hashlib.sha256(f"{prompt}:{'/'.join(steps)}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32


def finished(steps: tuple[str, ...]) -> bool:
    return len(steps) >= DEPTH or (len(steps) >= 2 and steps[-1] == "0")


def answer(steps) -> int:
    return sum(int(s) for s in steps) % 3


def answer_of(branch: Branch) -> int:
    return answer(branch.steps)


class ToyPolicy:
    def __init__(self, continue_labels: bool = False):
        self.continue_labels = continue_labels
        self.live: set[int] = set()
        self.next_uid = 0
        self.shift: dict[int, int] = {}  # root uid -> label shift of its first step
        self.made: dict[int, int] = defaultdict(int)  # branch uid -> children made so far

    def _branch(self, prompt: int, steps: list[str]) -> Branch:
        branch = Branch(self.next_uid, prompt, steps, finished=finished(tuple(steps)))
        self.next_uid += 1
        self.live.add(branch.uid)
        return branch

    def start(self, prompts, spend=None, owners=None):
        """Roots; a root prompted with earlier attempts ("Attempt i:" blocks) shifts its children's labels by their count."""
        self.contexts = list(prompts)
        roots = [self._branch(i if owners is None else owners[i], []) for i in range(len(prompts))]
        for root, context in zip(roots, prompts):
            self.shift[root.uid] = context.count("Attempt ")
        return roots

    def expand(self, branches, k, sampling, seed, spend):
        counts = [k] * len(branches) if isinstance(k, int) else list(k)
        out = []
        for parent, n in zip(branches, counts):
            assert parent.uid in self.live, "expanding a freed branch"
            shift = self.shift.get(parent.uid, 0) + (self.made[parent.uid] if self.continue_labels else 0)
            kids = [] if parent.finished else [self._branch(parent.prompt, parent.steps + [str(j + shift)])
                                               for j in range(n)]
            self.made[parent.uid] += len(kids)
            spend.generated_tokens += len(kids)
            out.append([Step(kid, kid.steps[-1], 1) for kid in kids])
        return out

    def free(self, branch):
        assert branch.uid in self.live, "double free"
        self.live.remove(branch.uid)


class ToyVerifier:
    def __init__(self):
        self.live: set[int] = set()
        self.scored: list[tuple[str, ...]] = []

    def attach(self, roots, questions, spend):
        self.live.update(r.uid for r in roots)

    def fork(self, parent, children):
        assert parent.uid in self.live
        self.live.update(c.uid for c in children)

    def free(self, branch):
        self.live.remove(branch.uid)

    def score(self, branches, spend):
        self.scored += [tuple(b.steps) for b in branches]
        return torch.tensor([value(tuple(b.steps), b.prompt) for b in branches], dtype=torch.float32)


def _best(paths, scores, keep):
    order = sorted(range(len(paths)), key=lambda i: (-scores[i], i))
    return order[:keep], order[keep:]


def reference_lookahead(n: int, width: int, k: int, max_steps: int, prompt: int = 0):
    """(finals [(steps, score)], pruned [steps]) of lookahead search (k = 0: beam search)."""
    def score(path):
        for _ in range(k):  # greedy roll-out: the first child, until finished
            if finished(path):
                break
            path = path + ("0",)
        return value(path, prompt)

    candidates = [(str(j),) for j in range(n)]
    finals, pruned = [], []
    for depth in range(max_steps):
        scores = [float(torch.tensor(score(c), dtype=torch.float32)) for c in candidates]
        ends = [i for i, c in enumerate(candidates) if finished(c) or depth == max_steps - 1]
        finals += [(candidates[i], scores[i]) for i in sorted(ends, key=lambda i: (-scores[i], i))]
        unfinished = [i for i in range(len(candidates)) if i not in ends]
        kept, dropped = _best([candidates[i] for i in unfinished], [scores[i] for i in unfinished], n // width)
        pruned += [candidates[unfinished[i]] for i in dropped]
        candidates = [candidates[unfinished[i]] + (str(j),) for i in kept for j in range(width)]
        if not candidates:
            break
    kept, dropped = _best(finals, [s for _, s in finals], n)  # the n best finals conclude the search
    pruned += [finals[i][0] for i in dropped]
    return [finals[i] for i in sorted(kept)], pruned


def reference_dvts(n: int, width: int, max_steps: int, prompt: int = 0):
    finals = []
    for _ in range(n // width):
        path = ()
        for depth in range(max_steps):
            children = [path + (str(j),) for j in range(width)]
            scores = [float(torch.tensor(value(c, prompt), dtype=torch.float32)) for c in children]
            (best,), _ = _best(children, scores, 1)
            path = children[best]
            if finished(path) or depth == max_steps - 1:
                finals.append((path, scores[best]))
                break
    return finals


def weighted_answer(finals) -> tuple[int | None, float]:
    totals: dict[int, float] = defaultdict(float)
    first: dict[int, int] = {}
    for i, (steps, score) in enumerate(finals):
        if finished(steps):
            totals[answer(steps)] += score
            first.setdefault(answer(steps), i)
    if not totals:
        return None, 0.0
    best = max(totals, key=lambda a: (totals[a], -first[a]))
    return best, totals[best]


def reference_mcts(k: int, iterations: int, c: float, puct: bool = False, prompt: int = 0,
                   widening: float | None = None):
    """{path: (visits, total value)} of MCTS with value evaluation on the toy tree (see ponder.search.mcts)."""
    import math

    def may_widen(path):
        allowed = k if widening is None else k * max(1, math.floor(stats[path][0] ** widening))
        return not (path and finished(path)) and len(children.get(path, [])) < allowed

    v32 = lambda path: float(torch.tensor(value(path, prompt), dtype=torch.float32))  # noqa: E731
    stats: dict[tuple, list] = {(): [0, 0.0]}
    children: dict[tuple, list[tuple]] = {}

    def backprop(path, v):
        for cut in range(len(path) + 1):
            stats[path[:cut]][0] += 1
            stats[path[:cut]][1] += v

    def key(parent, child):
        n, total = stats[child]
        if n == 0:
            return math.inf
        q = total / n
        if puct:  # every toy step has log-probability 0: a uniform prior
            return q + c * (1 / len(children[parent])) * math.sqrt(stats[parent][0]) / (1 + n)
        return q + c * math.sqrt(math.log(stats[parent][0]) / n)

    for _ in range(iterations):
        leaves = [p for p in stats if p not in children]
        if widening is None and all(p and finished(p) for p in leaves):
            break
        path = ()
        while path in children and not may_widen(path):
            best = children[path][0]
            for child in children[path][1:]:
                if key(path, child) > key(path, best):
                    best = child
            path = best
        if path and finished(path):
            backprop(path, v32(path))
            continue
        made = len(children.get(path, []))
        added = [path + (str(j),) for j in range(made, made + k)]
        children[path] = children.get(path, []) + added
        for child in added:
            stats[child] = [0, 0.0]
            backprop(child, v32(child))
    return {p: (n, t) for p, (n, t) in stats.items()}
