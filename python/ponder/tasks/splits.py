"""Fixed train / validation / test splits, disjoint by prompt.

Every problem of a split comes from one stream per preset level: level ``L`` yields
``generate(LEVELS[L], seed)`` for ``seed = L * 2**32 + k``, ``k = 0, 1, 2, ...``. A
problem belongs to the split that the SHA-256 of its prompt picks (:func:`split_of`:
90 % train, 5 % validation, 5 % test), so no prompt can be in two splits, whatever
their sizes. A split of ``n`` problems takes levels round-robin (problem ``i`` has level
``i % 5 + 1``: an equal mix of levels 1..5) and from each level's stream the first
problems it owns whose prompt it does not hold yet. ``split(name, n)`` is a prefix of
``split(name, m)`` for ``n <= m``.

Level 1 (two operations on one-digit numbers) has only 4,513 distinct problems, which
bounds how many problems of that level a split can hold: ``split("train", n)`` works
up to ``n = 20_450`` or so (4,090 level-1 prompts fall in train).
"""

from __future__ import annotations

import hashlib

from ponder.tasks.arithmetic import LEVELS, Problem, generate

SPLITS = ("train", "validation", "test")
SIZES = {"train": 20_000, "validation": 500, "test": 500}
"""Default number of problems per split."""
_PERCENT = {"train": range(0, 90), "validation": range(90, 95), "test": range(95, 100)}
_MAX_MISSES = 20_000


def split_of(prompt: str) -> str:
    """The split that owns ``prompt``: ``"train"``, ``"validation"`` or ``"test"``."""
    percent = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") % 100
    return next(name for name, bucket in _PERCENT.items() if percent in bucket)


def split(name: str, n: int | None = None) -> list[Problem]:
    """The first ``n`` problems of split ``name`` (default :data:`SIZES` ``[name]``).

    Raises ValueError for an unknown split name, a negative ``n``, or an ``n`` larger
    than a level's share of distinct problems allows.
    """
    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
    n = SIZES[name] if n is None else n
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    levels = sorted(LEVELS)
    next_k = dict.fromkeys(levels, 0)
    seen: set[str] = set()
    problems = []
    for i in range(n):
        level = levels[i % len(levels)]
        for _ in range(_MAX_MISSES):
            problem = generate(LEVELS[level], (level << 32) + next_k[level])
            next_k[level] += 1
            if problem.prompt not in seen and split_of(problem.prompt) == name:
                break
        else:
            raise ValueError(f"split {name!r} ran out of distinct level-{level} problems after "
                             f"{len(problems)} problems; ask for fewer than n={n}")
        seen.add(problem.prompt)
        problems.append(problem)
    return problems
