"""Reference PRM scoring: the definition of ``ponder.ops.step_scores`` and ``ponder.ops.vote``.

Pure PyTorch, written to be obviously right rather than fast: the definition of the ops
in :mod:`ponder.ops.scoring` and the oracle every backend is tested against.

Step scores (``step_scores``)
-----------------------------
A PRM forward over a packed batch gives ``head_logits`` [T, C]. Step ``p`` is read at
row ``rows[p]`` and belongs to solution ``solution[p]``; the steps of one solution come
in the order they have in ``rows`` (they need not be contiguous).

* ``head="pair"``: ``score = sigmoid(l[good] - l[bad])``, the probability of ``good``
  under a softmax over the two logits (a step-tag token pair such as '+'/'-'; a 2-class
  classification head is ``good=1, bad=0``). Computed in float32. A NaN logit gives a
  NaN score; ``l[good] = +inf`` with a finite ``l[bad]`` gives 1 (and 0 the other way
  round); two equal infinities have no difference and give NaN.
* ``head="sigmoid"``: ``score = sigmoid(l[good])`` (a value head, ``C >= 1``).

Each solution ``s`` carries a running aggregate of its earlier steps, ``prior_value[s]``
over ``prior_count[s]`` steps (the value is ignored when the count is 0). With ``new``
its new scores in order, the value after this call is, for ``aggregate``:

* ``"last"``: the last new score;
* ``"min"``: ``min(prior, *new)`` (NaN wins: a NaN anywhere gives NaN);
* ``"prod"``: ``prior * prod(new)``;
* ``"mean"``: ``(prior * count + sum(new)) / (count + len(new))``;

where the prior takes part only when its count is positive, and the count becomes
``prior_count + len(new)``. A solution with no new step keeps ``prior_value`` and
``prior_count`` exactly.

Votes (``vote``)
----------------
Prompt ``g`` owns candidates ``offsets[g]:offsets[g+1]``, each with an answer id
(``-1``: no answer extracted) and a float32 score. A NaN score counts as ``-inf``
wherever scores are compared, and adds nothing to a weighted sum.

* ``"max"``: the candidate with the highest score (ties: the lowest index), whatever
  its answer (its answer may be ``-1``); weight = its score (NaN read as ``-inf``).
* ``"weighted"``: per distinct answer ``>= 0``, the sum of its candidates' scores; the
  answer with the largest sum wins (ties: the answer whose first candidate comes
  first; a NaN sum, from ``+inf`` and ``-inf`` scores, ranks below every other sum);
  weight = that sum.
* ``"majority"``: as ``"weighted"`` with every score counted as 1 (weight = the count).

For ``"weighted"`` and ``"majority"`` the winning candidate is the highest-scored
candidate with the winning answer (ties: the lowest index), and a prompt whose
candidates all have answer ``-1`` (or that has none) has no winner: winner and answer
``-1``, weight 0.
"""

from __future__ import annotations

import torch

HEADS = ("pair", "sigmoid")
AGGREGATES = ("last", "min", "prod", "mean")
VOTE_METHODS = ("max", "weighted", "majority")


def step_scores(head_logits: torch.Tensor, rows: torch.Tensor, solution: torch.Tensor, prior_value: torch.Tensor,
                prior_count: torch.Tensor, head: str, good: int, bad: int,
                aggregate: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score new steps and fold them into their solutions' running aggregates.

    ``head_logits`` float [T, C]; ``rows``, ``solution`` int64 [P]; ``prior_value``
    float32 [S]; ``prior_count`` int64 [S]. Returns ``(scores float32 [P], value
    float32 [S], count int64 [S])``.
    """
    x = head_logits[rows, good].float()
    if head == "pair":
        x = x - head_logits[rows, bad].float()
    scores = torch.sigmoid(x)

    num_solutions = prior_value.shape[0]
    added = torch.zeros_like(prior_count).index_add_(0, solution, torch.ones_like(solution))
    has_prior = prior_count > 0
    if aggregate == "last":
        step = torch.arange(rows.shape[0], device=rows.device)
        last = torch.full_like(prior_count, -1).scatter_reduce_(0, solution, step, "amax")
        combined = _take(scores, last, float("nan"))
    elif aggregate == "min":
        new = prior_value.new_full((num_solutions,), float("inf")).scatter_reduce_(0, solution, scores, "amin")
        combined = torch.where(has_prior, torch.minimum(prior_value, new), new)
    elif aggregate == "prod":
        new = prior_value.new_ones(num_solutions).scatter_reduce_(0, solution, scores, "prod")
        combined = torch.where(has_prior, prior_value * new, new)
    else:  # mean
        new = torch.zeros_like(prior_value).index_add_(0, solution, scores)
        combined = (torch.where(has_prior, prior_value * prior_count, 0.0) + new) / (prior_count.clamp(min=0) + added)
    value = torch.where(added > 0, combined, prior_value)
    return scores, value, prior_count + added


def _take(values: torch.Tensor, position: torch.Tensor, fill) -> torch.Tensor:
    """``values[position]``, with ``fill`` where ``position`` is -1 (``values`` may be empty)."""
    if values.numel() == 0:
        return torch.full(position.shape, fill, dtype=values.dtype, device=values.device)
    return torch.where(position >= 0, values[position.clamp(min=0)], fill)


def _argmax_per_segment(segment: torch.Tensor, key: torch.Tensor, order: torch.Tensor, valid: torch.Tensor,
                        num_segments: int) -> torch.Tensor:
    """Per segment, the position of its valid element with the largest ``key`` (no NaN), ties to the smallest ``order``.

    ``segment``, ``order`` int64 [M] (``order`` distinct within a segment); ``key``
    float32 [M]; ``valid`` bool [M]. Returns int64 [num_segments], -1 for a segment with
    no valid element. (Masks rather than boolean indexing keep every shape static, so
    the reference runs under ``torch.compile`` too.)
    """
    key = torch.where(valid, key, float("-inf"))
    top = key.new_full((num_segments,), float("-inf")).scatter_reduce_(0, segment, key, "amax")
    tied = valid & (key == top[segment])
    last = torch.iinfo(torch.int64).max
    first = order.new_full((num_segments,), last).scatter_reduce_(0, segment, torch.where(tied, order, last), "amin")
    chosen = tied & (order == first[segment])
    position = torch.arange(key.shape[0], device=key.device)
    return torch.full((num_segments,), -1, device=key.device).scatter_reduce_(
        0, segment, torch.where(chosen, position, -1), "amax")


def _first_with_same_answer(prompt: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """For each candidate, the index of the first candidate of its prompt with its answer: int64 [N]."""
    order = torch.argsort(answers, stable=True)
    order = order[torch.argsort(prompt[order], stable=True)]  # by prompt, then answer, then index
    p, a = prompt[order], answers[order]
    run_starts = torch.ones_like(order, dtype=torch.bool)
    run_starts[1:] = (p[1:] != p[:-1]) | (a[1:] != a[:-1])
    position = torch.arange(order.shape[0], device=order.device)
    run_start = torch.cummax(torch.where(run_starts, position, 0), 0).values
    return torch.empty_like(order).scatter_(0, order, order[run_start])


def vote(answers: torch.Tensor, scores: torch.Tensor, offsets: torch.Tensor,
         method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick one candidate per prompt by best-of-N, weighted best-of-N or majority vote.

    ``answers`` int64 [N]; ``scores`` float32 [N]; ``offsets`` int64 [G + 1]. Returns
    ``(winner int64 [G], answer int64 [G], weight float32 [G])``.
    """
    num_prompts, num_candidates = offsets.shape[0] - 1, answers.shape[0]
    index = torch.arange(num_candidates, device=answers.device)
    prompt = torch.repeat_interleave(torch.arange(num_prompts, device=answers.device), offsets.diff(),
                                     output_size=num_candidates)
    key = torch.where(scores.isnan(), float("-inf"), scores)
    if method == "max":
        winner = _argmax_per_segment(prompt, key, index, torch.ones_like(answers, dtype=torch.bool), num_prompts)
        weight = _take(key, winner, 0.0)
    else:
        # An answer's candidates form a group, named by its first candidate: its sum, in
        # candidate order, and its best candidate are kept at that index.
        group = _first_with_same_answer(prompt, answers)
        eligible = answers >= 0
        weights = torch.ones_like(scores) if method == "majority" else torch.where(scores.isnan(), 0.0, scores)
        total = torch.zeros_like(scores).index_add_(0, group, weights)
        best = _argmax_per_segment(group, key, index, eligible, num_candidates)
        rank = torch.where(total.isnan(), float("-inf"), total)
        chosen = _argmax_per_segment(prompt, rank, index, eligible & (group == index), num_prompts)
        winner = _take(best, chosen, -1)
        weight = _take(total, chosen, 0.0)
    return winner, _take(answers, winner, -1), weight
